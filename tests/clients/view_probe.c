/*
 * view_probe: plain-syscall probes of creation status, commit and protections, used by
 * tests/status.rs, tests/commit.rs and tests/protections.rs.
 *
 *   race DIR PREFIX PROCS ROUNDS  per round R, fork PROCS processes that wait on one pipe
 *                                 (the barrier) and then all open DIR/PREFIX-R with
 *                                 O_RDWR|O_CREAT at once. Each, holding its fd, reads the
 *                                 sidecar and user.sectionfs.status, writes byte IDX+1 at
 *                                 offset IDX, and prints
 *                                   "R IDX status=<sidecar> xattr=<xattr> ino=<st_ino>"
 *                                 then the parent checks all PROCS bytes landed in one
 *                                 section: "R shared=ok"
 *   touch PATH OFFSET LEN BYTE    map [0, OFFSET+LEN) MAP_SHARED without looking at the
 *                                 size, store BYTE in every byte of the range, msync: "ok"
 *                                 (a store the section cannot back dies of SIGBUS)
 *   readonly PATH                 on an O_RDONLY fd, try each way to write:
 *                                   "map_shared_write=<E> mprotect_write=<E> write=<E>
 *                                    map_shared_read=<E> open_rdwr=<E>"
 *                                 where <E> is "ok" or the errno's name
 *   private PATH LEN BYTE         on an O_RDONLY fd, map LEN bytes MAP_PRIVATE read-write
 *                                 and MAP_SHARED read-only; check both show the section,
 *                                 store BYTE through the private view, check the shared
 *                                 view is unchanged: "ok first=<byte seen before>"
 *
 * Exit codes as section_client.c: 0 success; 2 a syscall failed ("error: <op>: <strerror>
 * (errno=<N>)" on stderr); 3 a check failed (the reason on stdout); 64 bad command line.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#define EXIT_SYSCALL 2
#define EXIT_MISMATCH 3
#define EXIT_USAGE 64

static void __attribute__((noreturn)) die_errno(const char *op)
{
	int e = errno;
	fprintf(stderr, "error: %s: %s (errno=%d)\n", op, strerror(e), e);
	exit(EXIT_SYSCALL);
}

static void __attribute__((noreturn)) usage(const char *why)
{
	fprintf(stderr,
		"usage: %s\n"
		"  view_probe race DIR PREFIX PROCS ROUNDS\n"
		"  view_probe touch PATH OFFSET LEN BYTE\n"
		"  view_probe readonly PATH\n"
		"  view_probe private PATH LEN BYTE\n",
		why);
	exit(EXIT_USAGE);
}

static uint64_t parse_u64(const char *s, const char *what)
{
	char *end;
	unsigned long long v;

	if (*s < '0' || *s > '9')
		usage(what);
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno != 0 || *end != '\0')
		usage(what);
	return (uint64_t)v;
}

static int parse_byte(const char *s)
{
	uint64_t v = parse_u64(s, "BYTE must be 0..255");
	if (v > 255)
		usage("BYTE must be 0..255");
	return (int)v;
}

/* The value of `key=` in the sidecar of `path`, read to EOF (its st_size may be 0). */
static void sidecar_value(const char *path, const char *key, char *out, size_t cap)
{
	char buf[8192], *meta_path, *line, *save = NULL;
	size_t len = 0, klen = strlen(key);
	int fd;

	if (asprintf(&meta_path, "%s.meta", path) < 0)
		die_errno("asprintf");
	fd = open(meta_path, O_RDONLY);
	if (fd < 0)
		die_errno("open-meta");
	free(meta_path);
	for (;;) {
		ssize_t n = read(fd, buf + len, sizeof(buf) - 1 - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			die_errno("read-meta");
		if (n == 0 || (len += (size_t)n) == sizeof(buf) - 1)
			break;
	}
	buf[len] = '\0';
	close(fd);
	snprintf(out, cap, "(missing)");
	for (line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		if (strncmp(line, key, klen) == 0 && line[klen] == '=') {
			snprintf(out, cap, "%s", line + klen + 1);
			break;
		}
	}
}

static void race_child(const char *path, int barrier, uint64_t round, uint64_t idx)
{
	char status[64], xattr[64], line[256];
	unsigned char byte = (unsigned char)(idx + 1);
	struct stat st;
	ssize_t n;
	int fd;

	/* The barrier: every child blocks here until the parent closes the write end. */
	while ((n = read(barrier, line, 1)) < 0 && errno == EINTR)
		;
	if (n != 0)
		die_errno("barrier");
	fd = open(path, O_RDWR | O_CREAT, 0644);
	if (fd < 0)
		die_errno("open");
	/* Both answers are read while this process holds its fd: its own open's answer. */
	sidecar_value(path, "status", status, sizeof(status));
	n = fgetxattr(fd, "user.sectionfs.status", xattr, sizeof(xattr) - 1);
	if (n < 0)
		die_errno("fgetxattr");
	xattr[n] = '\0';
	if (fstat(fd, &st) != 0)
		die_errno("fstat");
	if (pwrite(fd, &byte, 1, (off_t)idx) != 1)
		die_errno("pwrite");
	n = snprintf(line, sizeof(line), "%" PRIu64 " %" PRIu64 " status=%s xattr=%s ino=%llu\n",
		     round, idx, status, xattr, (unsigned long long)st.st_ino);
	/* One write per line: lines of concurrent children never interleave. */
	if (write(STDOUT_FILENO, line, (size_t)n) != n)
		die_errno("write-stdout");
	close(fd);
	exit(0);
}

static int cmd_race(const char *dir, const char *prefix, uint64_t procs, uint64_t rounds)
{
	uint64_t r, i;

	for (r = 0; r < rounds; r++) {
		unsigned char got[256];
		char *path;
		int barrier[2], fd, failed = 0;

		if (procs == 0 || procs > sizeof(got))
			usage("PROCS must be 1..256");
		if (asprintf(&path, "%s/%s-%" PRIu64, dir, prefix, r) < 0)
			die_errno("asprintf");
		if (pipe(barrier) != 0)
			die_errno("pipe");
		for (i = 0; i < procs; i++) {
			pid_t pid = fork();
			if (pid < 0)
				die_errno("fork");
			if (pid == 0) {
				close(barrier[1]);
				race_child(path, barrier[0], r, i);
			}
		}
		close(barrier[0]);
		close(barrier[1]); /* release them all at once */
		for (i = 0; i < procs; i++) {
			int ws;
			if (wait(&ws) < 0)
				die_errno("wait");
			if (!WIFEXITED(ws) || WEXITSTATUS(ws) != 0)
				failed = 1;
		}
		if (failed) {
			printf("%" PRIu64 " a child failed\n", r);
			return EXIT_MISMATCH;
		}
		fd = open(path, O_RDONLY);
		if (fd < 0)
			die_errno("open-check");
		if (pread(fd, got, procs, 0) != (ssize_t)procs)
			die_errno("pread");
		for (i = 0; i < procs; i++) {
			if (got[i] != (unsigned char)(i + 1)) {
				printf("%" PRIu64 " byte %" PRIu64 " is %u: not one section\n", r, i,
				       got[i]);
				return EXIT_MISMATCH;
			}
		}
		close(fd);
		free(path);
		printf("%" PRIu64 " shared=ok\n", r);
		fflush(stdout);
	}
	return 0;
}

static int cmd_touch(const char *path, uint64_t off, uint64_t len, int byte)
{
	size_t total = (size_t)(off + len);
	unsigned char *p;
	int fd = open(path, O_RDWR);

	if (fd < 0)
		die_errno("open");
	if (total == 0)
		usage("OFFSET+LEN must be > 0");
	p = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED)
		die_errno("mmap");
	memset(p + off, byte, (size_t)len);
	if (msync(p, total, MS_SYNC) != 0)
		die_errno("msync");
	munmap(p, total);
	close(fd);
	printf("ok\n");
	return 0;
}

static const char *result(int ok)
{
	const char *name;

	if (ok)
		return "ok";
	name = strerrorname_np(errno);
	return name ? name : "unknown";
}

static int cmd_readonly(const char *path)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	const char *shared_write, *upgrade, *wr, *shared_read, *rdwr;
	void *p;
	int fd = open(path, O_RDONLY), fd2;

	if (fd < 0)
		die_errno("open");
	p = mmap(NULL, page, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	shared_write = result(p != MAP_FAILED);
	if (p != MAP_FAILED)
		munmap(p, page);
	p = mmap(NULL, page, PROT_READ, MAP_SHARED, fd, 0);
	shared_read = result(p != MAP_FAILED);
	upgrade = "not-tried";
	if (p != MAP_FAILED) {
		upgrade = result(mprotect(p, page, PROT_READ | PROT_WRITE) == 0);
		munmap(p, page);
	}
	wr = result(write(fd, "x", 1) == 1);
	fd2 = open(path, O_RDWR);
	rdwr = result(fd2 >= 0);
	if (fd2 >= 0)
		close(fd2);
	printf("map_shared_write=%s mprotect_write=%s write=%s map_shared_read=%s open_rdwr=%s\n",
	       shared_write, upgrade, wr, shared_read, rdwr);
	close(fd);
	return 0;
}

static int cmd_private(const char *path, uint64_t len, int byte)
{
	unsigned char *priv, *shared, *before;
	uint64_t i;
	int fd = open(path, O_RDONLY);

	if (fd < 0)
		die_errno("open");
	if (len == 0)
		usage("LEN must be > 0");
	priv = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
	if (priv == MAP_FAILED)
		die_errno("mmap-private");
	shared = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, 0);
	if (shared == MAP_FAILED)
		die_errno("mmap-shared");
	before = malloc(len);
	if (before == NULL)
		die_errno("malloc");
	memcpy(before, shared, len);
	if (memcmp(priv, before, len) != 0) {
		printf("the private view does not show the section\n");
		return EXIT_MISMATCH;
	}
	memset(priv, byte, len);
	for (i = 0; i < len; i++) {
		if (priv[i] != (unsigned char)byte) {
			printf("private store lost at %" PRIu64 "\n", i);
			return EXIT_MISMATCH;
		}
	}
	if (memcmp(shared, before, len) != 0) {
		printf("a private store reached the shared view\n");
		return EXIT_MISMATCH;
	}
	printf("ok first=%u\n", before[0]);
	return 0;
}

int main(int argc, char **argv)
{
	const char *cmd;

	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc < 3)
		usage("missing arguments");
	cmd = argv[1];
	if (strcmp(cmd, "race") == 0 && argc == 6)
		return cmd_race(argv[2], argv[3], parse_u64(argv[4], "PROCS must be a number"),
				parse_u64(argv[5], "ROUNDS must be a number"));
	if (strcmp(cmd, "touch") == 0 && argc == 6)
		return cmd_touch(argv[2], parse_u64(argv[3], "OFFSET must be a number"),
				 parse_u64(argv[4], "LEN must be a number"), parse_byte(argv[5]));
	if (strcmp(cmd, "readonly") == 0 && argc == 3)
		return cmd_readonly(argv[2]);
	if (strcmp(cmd, "private") == 0 && argc == 5)
		return cmd_private(argv[2], parse_u64(argv[3], "LEN must be a number"),
				   parse_byte(argv[4]));
	usage("unknown subcommand or wrong number of arguments");
}
