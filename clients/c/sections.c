/*
 * sections.c: the calls of sections.h on a sectionfs mount.
 *
 * A section handle owns one file descriptor of the section (on the mount, a memfd for an
 * unnamed one, or a duplicate of the caller's file for an unnamed one over a file). A
 * view owns a duplicate of its handle's descriptor until it is unmapped: that is what
 * keeps a lifetime=handles section named while only views remain, as Windows' views
 * hold the section. Handles and views are found through one registry under one mutex;
 * nothing else is shared between threads but the mount's own answers.
 */
#define _GNU_SOURCE
#include "sections.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#define DEFAULT_MOUNT "/mnt/sections"
/* The mount's limit: a name and its ".meta" sidecar must fit in 255 bytes. */
#define NAME_MAX_BYTES 250
/* An exclusive create that fails because the name exists, then an open that fails
 * because it was removed meanwhile: try again, but not forever. */
#define CREATE_TRIES 1000
/* Values of hFile below this are file descriptors (HANDLE_FROM_FD); our handles are
 * heap pointers, looked up in the registry before this is considered. */
#define FD_HANDLE_LIMIT (1u << 20)
#define LIFETIME_XATTR "user.sectionfs.lifetime"

struct section {
    int fd;
    DWORD protect; /* PAGE_READONLY, PAGE_READWRITE or PAGE_WRITECOPY */
    struct section *next;
};

struct view {
    char *base;
    size_t len;
    int fd; /* a duplicate of the handle's descriptor, held while mapped */
    struct view *next;
};

/* Guards both lists. Never held across a call to the mount. */
static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static struct section *sections;
static struct view *views;

static _Thread_local DWORD last_error;

DWORD WINAPI GetLastError(void) { return last_error; }

void WINAPI SetLastError(DWORD code) { last_error = code; }

/* The one translation of an errno into a Win32 error code. */
static DWORD win32_error(int err)
{
    switch (err) {
    case 0:
        return ERROR_SUCCESS;
    case ENOENT:
        return ERROR_FILE_NOT_FOUND;
    case ENOTDIR:
        return ERROR_PATH_NOT_FOUND;
    case EACCES:
    case EPERM:
    case EROFS:
    case ETXTBSY:
        return ERROR_ACCESS_DENIED;
    case ENOSPC:
    case EDQUOT:
    case EFBIG:
        return ERROR_DISK_FULL;
    case EEXIST:
        return ERROR_ALREADY_EXISTS;
    case EINVAL:
    case EISDIR:
    case ELOOP:
        return ERROR_INVALID_PARAMETER;
    case ENAMETOOLONG:
        return ERROR_FILENAME_EXCED_RANGE;
    case EBADF:
        return ERROR_INVALID_HANDLE;
    case ENOMEM:
    case EOVERFLOW:
        return ERROR_NOT_ENOUGH_MEMORY;
    case EMFILE:
    case ENFILE:
        return ERROR_TOO_MANY_OPEN_FILES;
    default:
        return ERROR_GEN_FAILURE;
    }
}

static void fail_errno(void) { last_error = win32_error(errno); }

/* ---- Names ---------------------------------------------------------------------- */

/* "Name", "Global\Name" or "Local\Name" -> "MOUNT/Name", "MOUNT/Global/Name",
 * "MOUNT/Local/Name" in *out (malloc'd). Returns 0 or a Win32 error. */
static DWORD section_path(const char *name, char **out)
{
    const char *mount = getenv("SECTIONFS_MOUNT");
    const char *ns = "";
    const char *rest = name;
    size_t len;
    int n;

    if (mount == NULL || mount[0] == '\0')
        mount = DEFAULT_MOUNT;
    if (strncmp(name, "Global\\", 7) == 0) {
        ns = "Global/";
        rest = name + 7;
    } else if (strncmp(name, "Local\\", 6) == 0) {
        ns = "Local/";
        rest = name + 6;
    }
    /* Windows forbids another backslash; a file name cannot hold '/', "." or "..". */
    if (rest[0] == '\0' || strchr(rest, '\\') != NULL || strchr(rest, '/') != NULL ||
        strcmp(rest, ".") == 0 || strcmp(rest, "..") == 0)
        return ERROR_INVALID_PARAMETER;
    len = strlen(rest);
    if (len > NAME_MAX_BYTES)
        return ERROR_FILENAME_EXCED_RANGE;
    n = asprintf(out, "%s/%s%s", mount, ns, rest);
    if (n < 0)
        return ERROR_NOT_ENOUGH_MEMORY;
    return 0;
}

/* UTF-16 (NUL-terminated) -> UTF-8 in *out (malloc'd). Returns 0 or a Win32 error. */
static DWORD utf8_of_utf16(const WCHAR *in, char **out)
{
    size_t units = 0, i, o = 0;
    char *s;

    while (in[units] != 0)
        units++;
    /* At most 3 bytes per UTF-16 unit (a surrogate pair, two units, makes 4). */
    s = malloc(units * 3 + 1);
    if (s == NULL)
        return ERROR_NOT_ENOUGH_MEMORY;
    for (i = 0; i < units; i++) {
        uint32_t c = in[i];
        if (c >= 0xD800 && c <= 0xDBFF) {
            uint32_t lo = in[i + 1]; /* the terminator at worst */
            if (lo < 0xDC00 || lo > 0xDFFF)
                goto lone;
            c = 0x10000 + ((c - 0xD800) << 10) + (lo - 0xDC00);
            i++;
        } else if (c >= 0xDC00 && c <= 0xDFFF) {
            goto lone;
        }
        if (c < 0x80) {
            s[o++] = (char)c;
        } else if (c < 0x800) {
            s[o++] = (char)(0xC0 | (c >> 6));
            s[o++] = (char)(0x80 | (c & 0x3F));
        } else if (c < 0x10000) {
            s[o++] = (char)(0xE0 | (c >> 12));
            s[o++] = (char)(0x80 | ((c >> 6) & 0x3F));
            s[o++] = (char)(0x80 | (c & 0x3F));
        } else {
            s[o++] = (char)(0xF0 | (c >> 18));
            s[o++] = (char)(0x80 | ((c >> 12) & 0x3F));
            s[o++] = (char)(0x80 | ((c >> 6) & 0x3F));
            s[o++] = (char)(0x80 | (c & 0x3F));
        }
    }
    s[o] = '\0';
    *out = s;
    return 0;
lone:
    /* A lone surrogate has no UTF-8 form, so no file name can hold it. */
    free(s);
    return ERROR_INVALID_PARAMETER;
}

/* ---- The registry ----------------------------------------------------------------- */

static HANDLE new_handle(int fd, DWORD protect)
{
    struct section *s = malloc(sizeof *s);
    if (s == NULL) {
        close(fd);
        last_error = ERROR_NOT_ENOUGH_MEMORY;
        return NULL;
    }
    s->fd = fd;
    s->protect = protect;
    pthread_mutex_lock(&registry_lock);
    s->next = sections;
    sections = s;
    pthread_mutex_unlock(&registry_lock);
    return s;
}

/* The handle's descriptor and protection, if h is one of ours. */
static bool find_handle(HANDLE h, int *fd, DWORD *protect)
{
    struct section *s;
    bool found = false;

    pthread_mutex_lock(&registry_lock);
    for (s = sections; s != NULL; s = s->next) {
        if ((HANDLE)s == h) {
            *fd = s->fd;
            *protect = s->protect;
            found = true;
            break;
        }
    }
    pthread_mutex_unlock(&registry_lock);
    return found;
}

int sections_handle_fd(HANDLE h)
{
    int fd;
    DWORD protect;

    if (!find_handle(h, &fd, &protect)) {
        last_error = ERROR_INVALID_HANDLE;
        return -1;
    }
    return fd;
}

/* ---- Growth ----------------------------------------------------------------------- */

/* Grows the section behind fd to at least size bytes; never shrinks. Committed growth
 * allocates the new range (fallocate grows the size with it, or fails changing
 * nothing); where the file system cannot allocate, ftruncate grows it. */
static DWORD grow(int fd, uint64_t size, bool commit)
{
    struct stat st;

    if (fstat(fd, &st) != 0)
        return win32_error(errno);
    if ((uint64_t)st.st_size >= size)
        return 0;
    if (commit) {
        if (fallocate(fd, 0, st.st_size, (off_t)(size - (uint64_t)st.st_size)) == 0)
            return 0;
        if (errno != EOPNOTSUPP && errno != ENOSYS)
            return win32_error(errno);
    }
    if (ftruncate(fd, (off_t)size) != 0)
        return win32_error(errno);
    return 0;
}

/* The end of every named create or open: grow to the size asked (KB Q104012) when this
 * handle may, then the handle and its ERROR_ALREADY_EXISTS answer. A growth that fails
 * leaves no section this call made. */
static HANDLE finish_open(const char *path, int fd, bool created, DWORD protect, uint64_t size,
                          bool commit)
{
    if (created || protect == PAGE_READWRITE) {
        DWORD err = grow(fd, size, commit);
        if (err != 0) {
            /* Windows makes no section then. The name goes now, not at the RELEASE
             * that follows close(2) a moment later; a racing opener keeps its handle. */
            if (created)
                unlink(path);
            close(fd);
            last_error = err;
            return NULL;
        }
    }
    HANDLE h = new_handle(fd, protect);
    if (h != NULL)
        last_error = created ? ERROR_SUCCESS : ERROR_ALREADY_EXISTS;
    return h;
}

/* ---- CreateFileMapping ------------------------------------------------------------ */

/* Opens or creates the named section at path (hFile == INVALID_HANDLE_VALUE). */
static HANDLE create_named(const char *path, DWORD protect, uint64_t size, bool commit,
                           int cloexec)
{
    int fd = -1, tries;
    bool created = false;
    DWORD err;

    for (tries = 0; tries < CREATE_TRIES; tries++) {
        /* The exclusive create decides who is the creator: the mount gives EEXIST to
         * every other racer, in any thread or process. */
        fd = open(path, O_RDWR | O_CREAT | O_EXCL | cloexec, 0600);
        if (fd >= 0) {
            created = true;
            break;
        }
        if (errno != EEXIST) {
            fail_errno();
            return NULL;
        }
        fd = open(path, (protect == PAGE_READWRITE ? O_RDWR : O_RDONLY) | cloexec);
        if (fd >= 0)
            break;
        if (errno != ENOENT) {
            fail_errno();
            return NULL;
        }
        /* Removed between the two opens (its last handle closed): try again. */
    }
    if (fd < 0) {
        last_error = ERROR_GEN_FAILURE;
        return NULL;
    }
    if (created) {
        /* Chosen while this handle is open: a handles section without one goes at once. */
        if (fsetxattr(fd, LIFETIME_XATTR, "handles", 7, 0) != 0) {
            err = win32_error(errno);
            unlink(path);
            close(fd);
            last_error = err;
            return NULL;
        }
    }
    return finish_open(path, fd, created, protect, size, commit);
}

/* The section over the caller's file (fd), named path: the mount's `ln -s FILE NAME`. */
static HANDLE create_over_file(const char *path, int file_fd, DWORD protect, uint64_t size,
                               bool commit, int cloexec)
{
    char link[64], target[PATH_MAX];
    struct stat file_st, path_st, mount_st;
    const char *mount = getenv("SECTIONFS_MOUNT");
    ssize_t n;
    int fd = -1, tries, flags = (protect == PAGE_READWRITE ? O_RDWR : O_RDONLY) | cloexec;
    bool created = false;
    DWORD err;

    if (mount == NULL || mount[0] == '\0')
        mount = DEFAULT_MOUNT;
    if (fstat(file_fd, &file_st) != 0) {
        fail_errno();
        return NULL;
    }
    /* A file on the mount would have the daemon open a file of its own mount. */
    if (stat(mount, &mount_st) == 0 && mount_st.st_dev == file_st.st_dev) {
        last_error = ERROR_INVALID_PARAMETER;
        return NULL;
    }
    snprintf(link, sizeof link, "/proc/self/fd/%d", file_fd);
    n = readlink(link, target, sizeof target - 1);
    if (n <= 0 || (size_t)n >= sizeof target - 1) {
        last_error = ERROR_FILE_INVALID;
        return NULL;
    }
    target[n] = '\0';
    /* The path must still lead to this very file (not deleted, not renamed away). */
    if (target[0] != '/' || stat(target, &path_st) != 0 || path_st.st_dev != file_st.st_dev ||
        path_st.st_ino != file_st.st_ino) {
        last_error = ERROR_FILE_INVALID;
        return NULL;
    }
    for (tries = 0; tries < CREATE_TRIES; tries++) {
        if (symlink(target, path) == 0) {
            created = true;
        } else if (errno != EEXIST) {
            fail_errno();
            return NULL;
        }
        fd = open(path, flags);
        if (fd >= 0)
            break;
        if (errno != ENOENT || created) {
            err = win32_error(errno);
            if (created)
                unlink(path); /* this call's section must not outlive its failure */
            last_error = err;
            return NULL;
        }
    }
    if (fd < 0) {
        last_error = ERROR_GEN_FAILURE;
        return NULL;
    }
    /* The Windows lifetime, as for a section of the mount; the file itself stays. The
     * mount refuses it on a section its creator may only read: that one persists. */
    if (created && fsetxattr(fd, LIFETIME_XATTR, "handles", 7, 0) != 0 && errno != EACCES &&
        errno != EPERM) {
        err = win32_error(errno);
        unlink(path);
        close(fd);
        last_error = err;
        return NULL;
    }
    return finish_open(path, fd, created, protect, size, commit);
}

/* An unnamed section: a memfd, or the caller's file itself. */
static HANDLE create_unnamed(int file_fd, DWORD protect, uint64_t size, bool commit,
                             int cloexec)
{
    int fd;
    DWORD err;

    if (file_fd < 0)
        fd = memfd_create("section", cloexec ? MFD_CLOEXEC : 0);
    else
        fd = fcntl(file_fd, cloexec ? F_DUPFD_CLOEXEC : F_DUPFD, 0);
    if (fd < 0) {
        fail_errno();
        return NULL;
    }
    if (size != 0) {
        err = grow(fd, size, commit);
        if (err != 0) {
            close(fd);
            last_error = err;
            return NULL;
        }
    }
    HANDLE h = new_handle(fd, protect);
    if (h != NULL)
        last_error = ERROR_SUCCESS;
    return h;
}

HANDLE WINAPI CreateFileMappingA(HANDLE hFile, LPSECURITY_ATTRIBUTES lpAttributes,
                                 DWORD flProtect, DWORD dwMaximumSizeHigh,
                                 DWORD dwMaximumSizeLow, LPCSTR lpName)
{
    DWORD protect = flProtect & 0xFF, attrs = flProtect & ~(DWORD)0xFF;
    uint64_t size = ((uint64_t)dwMaximumSizeHigh << 32) | dwMaximumSizeLow;
    bool paging = hFile == INVALID_HANDLE_VALUE;
    bool commit = (attrs & SEC_RESERVE) == 0;
    int cloexec = (lpAttributes != NULL && lpAttributes->bInheritHandle) ? 0 : O_CLOEXEC;
    int file_fd = -1, fd_flags, dummy_fd;
    DWORD dummy_protect, err;
    struct stat st;
    char *path = NULL;
    HANDLE h;

    if ((protect != PAGE_READONLY && protect != PAGE_READWRITE && protect != PAGE_WRITECOPY) ||
        (attrs & ~(DWORD)(SEC_COMMIT | SEC_RESERVE)) != 0 ||
        attrs == (DWORD)(SEC_COMMIT | SEC_RESERVE) || (!paging && (attrs & SEC_RESERVE)) ||
        size > (uint64_t)INT64_MAX || (paging && size == 0)) {
        last_error = ERROR_INVALID_PARAMETER;
        return NULL;
    }
    if (!paging) {
        /* A file handle is a descriptor; a section handle is not a file. */
        if (hFile == NULL || (uintptr_t)hFile >= FD_HANDLE_LIMIT ||
            find_handle(hFile, &dummy_fd, &dummy_protect)) {
            last_error = ERROR_INVALID_HANDLE;
            return NULL;
        }
        file_fd = (int)(intptr_t)hFile;
        fd_flags = fcntl(file_fd, F_GETFL);
        if (fd_flags < 0 || fstat(file_fd, &st) != 0) {
            last_error = ERROR_INVALID_HANDLE;
            return NULL;
        }
        if (!S_ISREG(st.st_mode)) {
            last_error = ERROR_INVALID_PARAMETER;
            return NULL;
        }
        /* The file's access must allow the protection asked for. */
        if ((fd_flags & O_ACCMODE) == O_WRONLY ||
            (protect == PAGE_READWRITE && (fd_flags & O_ACCMODE) != O_RDWR)) {
            last_error = ERROR_ACCESS_DENIED;
            return NULL;
        }
        if (size == 0 && st.st_size == 0) {
            last_error = ERROR_FILE_INVALID;
            return NULL;
        }
        /* Growing the file needs write access too. */
        if (size > (uint64_t)st.st_size && (fd_flags & O_ACCMODE) != O_RDWR) {
            last_error = ERROR_ACCESS_DENIED;
            return NULL;
        }
    }
    if (lpName == NULL || lpName[0] == '\0')
        return create_unnamed(file_fd, protect, size, commit, cloexec);
    err = section_path(lpName, &path);
    if (err != 0) {
        last_error = err;
        return NULL;
    }
    if (paging)
        h = create_named(path, protect, size, commit, cloexec);
    else
        h = create_over_file(path, file_fd, protect, size, commit, cloexec);
    free(path);
    return h;
}

HANDLE WINAPI CreateFileMappingW(HANDLE hFile, LPSECURITY_ATTRIBUTES lpAttributes,
                                 DWORD flProtect, DWORD dwMaximumSizeHigh,
                                 DWORD dwMaximumSizeLow, LPCWSTR lpName)
{
    char *name = NULL;
    DWORD err;
    HANDLE h;

    if (lpName != NULL) {
        err = utf8_of_utf16(lpName, &name);
        if (err != 0) {
            last_error = err;
            return NULL;
        }
    }
    h = CreateFileMappingA(hFile, lpAttributes, flProtect, dwMaximumSizeHigh,
                           dwMaximumSizeLow, name);
    free(name);
    return h;
}

/* ---- OpenFileMapping -------------------------------------------------------------- */

HANDLE WINAPI OpenFileMappingA(DWORD dwDesiredAccess, BOOL bInheritHandle, LPCSTR lpName)
{
    bool write = (dwDesiredAccess & FILE_MAP_WRITE) != 0;
    DWORD protect, err;
    char *path = NULL;
    int fd;

    if (lpName == NULL || lpName[0] == '\0') {
        last_error = ERROR_INVALID_PARAMETER;
        return NULL;
    }
    if (write)
        protect = PAGE_READWRITE;
    else if ((dwDesiredAccess & FILE_MAP_COPY) != 0)
        protect = PAGE_WRITECOPY;
    else if ((dwDesiredAccess & FILE_MAP_READ) != 0)
        protect = PAGE_READONLY;
    else {
        last_error = ERROR_INVALID_PARAMETER;
        return NULL;
    }
    err = section_path(lpName, &path);
    if (err != 0) {
        last_error = err;
        return NULL;
    }
    fd = open(path, (write ? O_RDWR : O_RDONLY) | (bInheritHandle ? 0 : O_CLOEXEC));
    free(path);
    if (fd < 0) {
        fail_errno();
        return NULL;
    }
    return new_handle(fd, protect);
}

HANDLE WINAPI OpenFileMappingW(DWORD dwDesiredAccess, BOOL bInheritHandle, LPCWSTR lpName)
{
    char *name = NULL;
    DWORD err;
    HANDLE h;

    if (lpName == NULL) {
        last_error = ERROR_INVALID_PARAMETER;
        return NULL;
    }
    err = utf8_of_utf16(lpName, &name);
    if (err != 0) {
        last_error = err;
        return NULL;
    }
    h = OpenFileMappingA(dwDesiredAccess, bInheritHandle, name);
    free(name);
    return h;
}

/* ---- Views -------------------------------------------------------------------------- */

LPVOID WINAPI MapViewOfFileEx(HANDLE hFileMappingObject, DWORD dwDesiredAccess,
                              DWORD dwFileOffsetHigh, DWORD dwFileOffsetLow,
                              SIZE_T dwNumberOfBytesToMap, LPVOID lpBaseAddress)
{
    uint64_t offset = ((uint64_t)dwFileOffsetHigh << 32) | dwFileOffsetLow;
    uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
    uint64_t len = dwNumberOfBytesToMap;
    int fd, view_fd, prot, flags;
    DWORD protect;
    struct stat st;
    struct view *v;
    void *p;

    if (!find_handle(hFileMappingObject, &fd, &protect)) {
        last_error = ERROR_INVALID_HANDLE;
        return NULL;
    }
    if ((dwDesiredAccess & FILE_MAP_WRITE) != 0) {
        if (protect != PAGE_READWRITE) {
            last_error = ERROR_ACCESS_DENIED;
            return NULL;
        }
        prot = PROT_READ | PROT_WRITE;
        flags = MAP_SHARED;
    } else if ((dwDesiredAccess & FILE_MAP_COPY) != 0) {
        prot = PROT_READ | PROT_WRITE;
        flags = MAP_PRIVATE;
    } else if ((dwDesiredAccess & FILE_MAP_READ) != 0) {
        prot = PROT_READ;
        flags = MAP_SHARED;
    } else {
        last_error = ERROR_INVALID_PARAMETER;
        return NULL;
    }
    if (offset % page != 0) {
        last_error = ERROR_MAPPED_ALIGNMENT;
        return NULL;
    }
    if (lpBaseAddress != NULL) {
        if ((uintptr_t)lpBaseAddress % page != 0) {
            last_error = ERROR_INVALID_ADDRESS;
            return NULL;
        }
        flags |= MAP_FIXED_NOREPLACE;
    }
    if (fstat(fd, &st) != 0) {
        fail_errno();
        return NULL;
    }
    if (st.st_size == 0) {
        last_error = ERROR_FILE_INVALID;
        return NULL;
    }
    /* Windows: a view may not reach past the section's end (STATUS_INVALID_VIEW_SIZE). */
    if (offset >= (uint64_t)st.st_size ||
        (len != 0 && len > (uint64_t)st.st_size - offset)) {
        last_error = ERROR_ACCESS_DENIED;
        return NULL;
    }
    if (len == 0)
        len = (uint64_t)st.st_size - offset;
    if (len > SIZE_MAX) {
        last_error = ERROR_NOT_ENOUGH_MEMORY;
        return NULL;
    }
    v = malloc(sizeof *v);
    if (v == NULL) {
        last_error = ERROR_NOT_ENOUGH_MEMORY;
        return NULL;
    }
    /* The view's own hold on the section, for as long as it is mapped. */
    view_fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (view_fd < 0) {
        fail_errno();
        free(v);
        return NULL;
    }
    p = mmap(lpBaseAddress, (size_t)len, prot, flags, view_fd, (off_t)offset);
    if (p == MAP_FAILED || (lpBaseAddress != NULL && p != lpBaseAddress)) {
        /* Kernels before 4.17 take MAP_FIXED_NOREPLACE as a hint. */
        last_error = p == MAP_FAILED && errno != EEXIST ? win32_error(errno)
                                                        : ERROR_INVALID_ADDRESS;
        if (p != MAP_FAILED)
            munmap(p, (size_t)len);
        close(view_fd);
        free(v);
        return NULL;
    }
    v->base = p;
    v->len = (size_t)len;
    v->fd = view_fd;
    pthread_mutex_lock(&registry_lock);
    v->next = views;
    views = v;
    pthread_mutex_unlock(&registry_lock);
    return p;
}

LPVOID WINAPI MapViewOfFile(HANDLE hFileMappingObject, DWORD dwDesiredAccess,
                            DWORD dwFileOffsetHigh, DWORD dwFileOffsetLow,
                            SIZE_T dwNumberOfBytesToMap)
{
    return MapViewOfFileEx(hFileMappingObject, dwDesiredAccess, dwFileOffsetHigh,
                           dwFileOffsetLow, dwNumberOfBytesToMap, NULL);
}

BOOL WINAPI UnmapViewOfFile(LPCVOID lpBaseAddress)
{
    struct view **link, *v = NULL;

    pthread_mutex_lock(&registry_lock);
    for (link = &views; *link != NULL; link = &(*link)->next) {
        if ((*link)->base == lpBaseAddress) {
            v = *link;
            *link = v->next;
            break;
        }
    }
    pthread_mutex_unlock(&registry_lock);
    if (v == NULL) {
        last_error = ERROR_INVALID_ADDRESS;
        return FALSE;
    }
    munmap(v->base, v->len);
    close(v->fd);
    free(v);
    return TRUE;
}

BOOL WINAPI FlushViewOfFile(LPCVOID lpBaseAddress, SIZE_T dwNumberOfBytesToFlush)
{
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t addr = (uintptr_t)lpBaseAddress, start = 0, end = 0;
    struct view *v;
    bool found = false;

    pthread_mutex_lock(&registry_lock);
    for (v = views; v != NULL; v = v->next) {
        uintptr_t base = (uintptr_t)v->base;
        if (addr >= base && addr < base + v->len) {
            start = addr & ~(page - 1);
            end = base + v->len;
            if (dwNumberOfBytesToFlush != 0 && dwNumberOfBytesToFlush < end - addr)
                end = addr + dwNumberOfBytesToFlush;
            found = true;
            break;
        }
    }
    pthread_mutex_unlock(&registry_lock);
    if (!found) {
        last_error = ERROR_INVALID_ADDRESS;
        return FALSE;
    }
    if (msync((void *)start, end - start, MS_SYNC) != 0) {
        fail_errno();
        return FALSE;
    }
    return TRUE;
}

/* ---- CloseHandle ------------------------------------------------------------------ */

BOOL WINAPI CloseHandle(HANDLE hObject)
{
    struct section **link, *s = NULL;

    pthread_mutex_lock(&registry_lock);
    for (link = &sections; *link != NULL; link = &(*link)->next) {
        if ((HANDLE)*link == hObject) {
            s = *link;
            *link = s->next;
            break;
        }
    }
    pthread_mutex_unlock(&registry_lock);
    if (s != NULL) {
        close(s->fd);
        free(s);
        return TRUE;
    }
    /* A file handle (HANDLE_FROM_FD). */
    if (hObject != NULL && hObject != INVALID_HANDLE_VALUE &&
        (uintptr_t)hObject < FD_HANDLE_LIMIT &&
        close((int)(intptr_t)hObject) == 0)
        return TRUE;
    last_error = ERROR_INVALID_HANDLE;
    return FALSE;
}
