/*
 * win32_probe: drives the calls of sections.h, for tests/win32.rs. Built against the
 * installed library with `pkg-config --cflags --libs sections`.
 *
 * The arguments are a script of steps, run in order on one current handle and one
 * current view; each step prints one line:
 *
 *   create NAME SIZE PROT      CreateFileMappingA(INVALID_HANDLE_VALUE, ...), PROT ro|rw|copy
 *                              [+reserve]: "create=<GetLastError>" or "create=fail:<err>"
 *   createw NAME SIZE          the same through CreateFileMappingW (NAME is UTF-8 here,
 *                              passed as UTF-16), PAGE_READWRITE
 *   file PATH SIZE NAME PROT   open(PATH) (O_RDWR for rw, else O_RDONLY), then
 *                              CreateFileMappingA(HANDLE_FROM_FD(fd), ...): "create=..."
 *                              (NAME "-" for an unnamed section); the fd is closed after
 *   open NAME ACCESS           OpenFileMappingA, ACCESS r|w|copy|all: "open=0" or "open=fail:<err>"
 *   map ACCESS OFFSET LEN      MapViewOfFile: "map=ok" or "map=fail:<err>"
 *   write OFFSET TEXT          stores TEXT into the view (a read-only view: SIGSEGV): "write=ok"
 *   read OFFSET LEN            "read=<the bytes up to the first NUL>"
 *   size                       fstat of the handle's fd: "size=<n>"
 *   flush                      FlushViewOfFile(view, 0): "flush=ok" or "flush=fail:<err>"
 *   unmap                      UnmapViewOfFile: "unmap=ok" or "unmap=fail:<err>"
 *   close                      CloseHandle: "close=ok" or "close=fail:<err>"
 *   wait                       reads one line (or EOF) from stdin: "wait=ok"
 *   go PATH                    waits until PATH exists (a start line for racers): "go=ok"
 *   threads NAME N             N threads race CreateFileMappingA(NAME, 4096); each keeps
 *                              its own GetLastError: "creators=<k> exists=<m> other=<o>"
 *   tls                        two threads set different last errors; each reads its own
 *                              and the main thread's stays: "tls=ok" or "tls=bad ..."
 *
 * Exit status: 0 after the last step, 64 for a bad script.
 */
#include <sections.h>

#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static HANDLE handle;
static char *view;

static void __attribute__((noreturn)) usage(const char *why)
{
    fprintf(stderr, "win32_probe: %s\n", why);
    exit(64);
}

static DWORD protection(const char *s)
{
    DWORD extra = 0;
    if (strstr(s, "+reserve") != NULL)
        extra = SEC_RESERVE;
    if (strncmp(s, "ro", 2) == 0)
        return PAGE_READONLY | extra;
    if (strncmp(s, "rw", 2) == 0)
        return PAGE_READWRITE | extra;
    if (strncmp(s, "copy", 4) == 0)
        return PAGE_WRITECOPY | extra;
    usage("PROT is ro, rw or copy");
}

static DWORD access_of(const char *s)
{
    if (strcmp(s, "r") == 0)
        return FILE_MAP_READ;
    if (strcmp(s, "w") == 0)
        return FILE_MAP_WRITE;
    if (strcmp(s, "copy") == 0)
        return FILE_MAP_COPY;
    if (strcmp(s, "all") == 0)
        return FILE_MAP_ALL_ACCESS;
    usage("ACCESS is r, w, copy or all");
}

static void report_handle(const char *op, HANDLE h)
{
    if (h == NULL)
        printf("%s=fail:%lu\n", op, (unsigned long)GetLastError());
    else
        printf("%s=%lu\n", op, (unsigned long)GetLastError());
    handle = h;
}

/* UTF-8 -> UTF-16, enough for the tests' names (up to U+10FFFF). */
static WCHAR *utf16(const char *s)
{
    size_t n = strlen(s), o = 0, i = 0;
    WCHAR *w = calloc(n * 2 + 1, sizeof *w);
    if (w == NULL)
        usage("out of memory");
    while (i < n) {
        unsigned char c = (unsigned char)s[i];
        uint32_t cp;
        if (c < 0x80) {
            cp = c;
            i += 1;
        } else if (c < 0xE0) {
            cp = ((uint32_t)(c & 0x1F) << 6) | (s[i + 1] & 0x3F);
            i += 2;
        } else if (c < 0xF0) {
            cp = ((uint32_t)(c & 0x0F) << 12) | ((uint32_t)(s[i + 1] & 0x3F) << 6) |
                 (s[i + 2] & 0x3F);
            i += 3;
        } else {
            cp = ((uint32_t)(c & 0x07) << 18) | ((uint32_t)(s[i + 1] & 0x3F) << 12) |
                 ((uint32_t)(s[i + 2] & 0x3F) << 6) | (s[i + 3] & 0x3F);
            i += 4;
        }
        if (cp >= 0x10000) {
            cp -= 0x10000;
            w[o++] = (WCHAR)(0xD800 + (cp >> 10));
            w[o++] = (WCHAR)(0xDC00 + (cp & 0x3FF));
        } else {
            w[o++] = (WCHAR)cp;
        }
    }
    return w;
}

struct racer {
    const char *name;
    pthread_barrier_t *start;
    DWORD error;
    HANDLE h;
};

static void *race(void *arg)
{
    struct racer *r = arg;
    pthread_barrier_wait(r->start);
    r->h = CreateFileMappingA(INVALID_HANDLE_VALUE, NULL, PAGE_READWRITE, 0, 4096, r->name);
    r->error = GetLastError();
    return NULL;
}

static void threads(const char *name, int n)
{
    struct racer *r = calloc((size_t)n, sizeof *r);
    pthread_t *t = calloc((size_t)n, sizeof *t);
    pthread_barrier_t start;
    int i, creators = 0, exists = 0, other = 0;

    if (r == NULL || t == NULL || n < 1)
        usage("threads: bad count");
    pthread_barrier_init(&start, NULL, (unsigned)n);
    for (i = 0; i < n; i++) {
        r[i].name = name;
        r[i].start = &start;
        pthread_create(&t[i], NULL, race, &r[i]);
    }
    for (i = 0; i < n; i++) {
        pthread_join(t[i], NULL);
        if (r[i].h != NULL && r[i].error == ERROR_SUCCESS)
            creators++;
        else if (r[i].h != NULL && r[i].error == ERROR_ALREADY_EXISTS)
            exists++;
        else
            other++;
    }
    printf("creators=%d exists=%d other=%d\n", creators, exists, other);
    for (i = 0; i < n; i++)
        if (r[i].h != NULL)
            CloseHandle(r[i].h);
    free(r);
    free(t);
}

static pthread_barrier_t tls_barrier;

static void *tls_thread(void *arg)
{
    DWORD mine = (DWORD)(uintptr_t)arg;
    SetLastError(mine);
    pthread_barrier_wait(&tls_barrier); /* both have set theirs */
    return (void *)(uintptr_t)(GetLastError() == mine);
}

static void tls(void)
{
    pthread_t a, b;
    void *ra, *rb;

    SetLastError(ERROR_DISK_FULL);
    pthread_barrier_init(&tls_barrier, NULL, 2);
    pthread_create(&a, NULL, tls_thread, (void *)(uintptr_t)ERROR_ACCESS_DENIED);
    pthread_create(&b, NULL, tls_thread, (void *)(uintptr_t)ERROR_INVALID_PARAMETER);
    pthread_join(a, &ra);
    pthread_join(b, &rb);
    if (ra && rb && GetLastError() == ERROR_DISK_FULL)
        printf("tls=ok\n");
    else
        printf("tls=bad a=%d b=%d main=%lu\n", ra != NULL, rb != NULL,
               (unsigned long)GetLastError());
}

int main(int argc, char **argv)
{
    int i = 1;

    setvbuf(stdout, NULL, _IOLBF, 0);
#define ARG() (i < argc ? argv[i++] : (usage("missing argument"), ""))
    while (i < argc) {
        const char *step = argv[i++];
        if (strcmp(step, "create") == 0) {
            const char *name = ARG();
            unsigned long long size = strtoull(ARG(), NULL, 0);
            DWORD prot = protection(ARG());
            report_handle("create", CreateFileMappingA(INVALID_HANDLE_VALUE, NULL, prot,
                                                       (DWORD)(size >> 32), (DWORD)size,
                                                       name));
        } else if (strcmp(step, "createw") == 0) {
            WCHAR *name = utf16(ARG());
            unsigned long long size = strtoull(ARG(), NULL, 0);
            report_handle("create", CreateFileMappingW(INVALID_HANDLE_VALUE, NULL,
                                                       PAGE_READWRITE, (DWORD)(size >> 32),
                                                       (DWORD)size, name));
            free(name);
        } else if (strcmp(step, "file") == 0) {
            const char *path = ARG();
            unsigned long long size = strtoull(ARG(), NULL, 0);
            const char *name = ARG();
            DWORD prot = protection(ARG());
            int fd = open(path, (prot & 0xFF) == PAGE_READWRITE ? O_RDWR : O_RDONLY);
            if (fd < 0) {
                perror(path);
                return 1;
            }
            report_handle("create", CreateFileMappingA(HANDLE_FROM_FD(fd), NULL, prot,
                                                       (DWORD)(size >> 32), (DWORD)size,
                                                       strcmp(name, "-") == 0 ? NULL
                                                                              : name));
            close(fd);
        } else if (strcmp(step, "open") == 0) {
            const char *name = ARG();
            HANDLE h = OpenFileMappingA(access_of(ARG()), FALSE, name);
            if (h != NULL)
                SetLastError(0);
            report_handle("open", h);
        } else if (strcmp(step, "map") == 0) {
            DWORD access = access_of(ARG());
            unsigned long long off = strtoull(ARG(), NULL, 0);
            size_t len = (size_t)strtoull(ARG(), NULL, 0);
            view = MapViewOfFile(handle, access, (DWORD)(off >> 32), (DWORD)off, len);
            if (view == NULL)
                printf("map=fail:%lu\n", (unsigned long)GetLastError());
            else
                printf("map=ok\n");
        } else if (strcmp(step, "write") == 0) {
            size_t off = (size_t)strtoull(ARG(), NULL, 0);
            const char *text = ARG();
            memcpy(view + off, text, strlen(text) + 1);
            printf("write=ok\n");
        } else if (strcmp(step, "read") == 0) {
            size_t off = (size_t)strtoull(ARG(), NULL, 0);
            size_t len = (size_t)strtoull(ARG(), NULL, 0);
            printf("read=%.*s\n", (int)strnlen(view + off, len), view + off);
        } else if (strcmp(step, "size") == 0) {
            struct stat st;
            int fd = sections_handle_fd(handle);
            if (fd < 0 || fstat(fd, &st) != 0)
                printf("size=fail:%lu\n", (unsigned long)GetLastError());
            else
                printf("size=%lld\n", (long long)st.st_size);
        } else if (strcmp(step, "flush") == 0) {
            if (FlushViewOfFile(view, 0))
                printf("flush=ok\n");
            else
                printf("flush=fail:%lu\n", (unsigned long)GetLastError());
        } else if (strcmp(step, "unmap") == 0) {
            if (UnmapViewOfFile(view))
                printf("unmap=ok\n");
            else
                printf("unmap=fail:%lu\n", (unsigned long)GetLastError());
        } else if (strcmp(step, "close") == 0) {
            if (CloseHandle(handle))
                printf("close=ok\n");
            else
                printf("close=fail:%lu\n", (unsigned long)GetLastError());
        } else if (strcmp(step, "wait") == 0) {
            char line[64];
            (void)!fgets(line, sizeof line, stdin);
            printf("wait=ok\n");
        } else if (strcmp(step, "go") == 0) {
            const char *path = ARG();
            struct timespec pause = {0, 1000000};
            while (access(path, F_OK) != 0)
                nanosleep(&pause, NULL);
            printf("go=ok\n");
        } else if (strcmp(step, "threads") == 0) {
            const char *name = ARG();
            threads(name, atoi(ARG()));
        } else if (strcmp(step, "tls") == 0) {
            tls();
        } else {
            usage(step);
        }
    }
    return 0;
}
