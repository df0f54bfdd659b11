/* Per-operation cost of metadata work on a sectionfs mount, in wall time and in CPU time
 * of this process and of the daemon (all its threads, from /proc/PID/task/N/schedstat).
 * CPU time moves far less than wall time on a machine others are using: compare builds
 * by it, with the caller and the daemon pinned to one CPU (see run.sh).
 *
 * cpu_per_op DIR N ROUND DAEMON_PID: creates N sections (create + write 64 B + close),
 * stats each (the first stat after a write), opens and closes each, unlinks each; prints
 * one line of microseconds per operation. */
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static int daemon_pid;

static double us(clockid_t c) {
    struct timespec t;
    clock_gettime(c, &t);
    return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static double daemon_cpu(void) {
    char dir[64];
    snprintf(dir, sizeof dir, "/proc/%d/task", daemon_pid);
    DIR *d = opendir(dir);
    if (!d) { perror(dir); exit(1); }
    double sum = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char path[128];
        snprintf(path, sizeof path, "%s/%s/schedstat", dir, e->d_name);
        FILE *f = fopen(path, "r");
        if (!f) continue;
        unsigned long long ns;
        if (fscanf(f, "%llu", &ns) == 1) sum += ns / 1e3;
        fclose(f);
    }
    closedir(d);
    return sum;
}

struct mark { double wall, self, daemon; };

/* Lets the async RELEASEs and FORGETs of the phase before finish first. */
static struct mark mark(void) {
    usleep(30000);
    return (struct mark){us(CLOCK_MONOTONIC), us(CLOCK_PROCESS_CPUTIME_ID), daemon_cpu()};
}

static void die(const char *what, const char *name) { perror(what); fprintf(stderr, "%s\n", name); exit(1); }

int main(int argc, char **argv) {
    if (argc != 5) { fprintf(stderr, "usage: %s DIR N ROUND DAEMON_PID\n", argv[0]); return 2; }
    int n = atoi(argv[2]);
    daemon_pid = atoi(argv[4]);
    char (*names)[256] = malloc(256 * (size_t)n);
    char buf[64];
    memset(buf, 0x42, sizeof buf);
    for (int i = 0; i < n; i++) snprintf(names[i], 256, "%s/p%s-%06d", argv[1], argv[3], i);
    const char *label[] = {"create", "firststat", "openclose", "unlink"};
    struct mark m[5];
    struct stat st;
    m[0] = mark();
    for (int i = 0; i < n; i++) {
        int fd = open(names[i], O_CREAT | O_EXCL | O_WRONLY, 0644);
        if (fd < 0) die("create", names[i]);
        if (write(fd, buf, sizeof buf) != sizeof buf) die("write", names[i]);
        close(fd);
    }
    m[1] = mark();
    for (int i = 0; i < n; i++) if (stat(names[i], &st)) die("stat", names[i]);
    m[2] = mark();
    for (int i = 0; i < n; i++) {
        int fd = open(names[i], O_RDWR);
        if (fd < 0) die("open", names[i]);
        close(fd);
    }
    m[3] = mark();
    for (int i = 0; i < n; i++) if (unlink(names[i])) die("unlink", names[i]);
    m[4] = mark();
    for (int k = 0; k < 4; k++)
        printf("%s wall %.1f self %.1f daemon %.1f  ", label[k],
               (m[k + 1].wall - m[k].wall - 30000) / n, (m[k + 1].self - m[k].self) / n,
               (m[k + 1].daemon - m[k].daemon) / n);
    printf("\n");
    return 0;
}
