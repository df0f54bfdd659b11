/*
 * section_client: a plain-syscall client of sectionfs, used by the integration
 * tests. section_client.py has the same command line, so a test can run the C
 * client in one process and the Python client in another on one section.
 *
 *   create PATH SIZE              open O_RDWR|O_CREAT 0644, grow to SIZE if smaller,
 *                                 read PATH.meta while holding the fd:
 *                                 prints "status=<status>" then "size=<n>"
 *   open PATH                     open O_RDWR (no O_CREAT): prints "size=<n>"
 *   fill PATH OFFSET LEN BYTE     memset the range through a MAP_SHARED view: "ok"
 *   check PATH OFFSET LEN BYTE    verify the range through a MAP_SHARED view: "ok"
 *   pingpong PATH ROLE ROUNDS     ROLE even|odd; alternate increments of the
 *                                 little-endian u64 at offset 0: "ok <counter>"
 *   grow-map PATH NEWSIZE BYTE    keep a view of the old size, grow, map the new
 *                                 tail, touch each of its pages: "ok old=<o> new=<n>"
 *   watch-size PATH EXPECT TIMEOUT_MS
 *                                 poll fstat until st_size == EXPECT: "ok"
 *
 * Exit codes: 0 success; 2 a syscall failed ("error: <op>: <strerror> (errno=<N>)"
 * on stderr); 3 check mismatch, size timeout or a sidecar without status (the
 * reason on stdout); 4 pingpong timeout (on stdout); 64 bad command line.
 */
#define _GNU_SOURCE
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define EXIT_SYSCALL 2
#define EXIT_MISMATCH 3
#define EXIT_TIMEOUT 4
#define EXIT_USAGE 64

#define PINGPONG_TIMEOUT_S 30.0

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
		"  section_client create PATH SIZE\n"
		"  section_client open PATH\n"
		"  section_client fill PATH OFFSET LEN BYTE\n"
		"  section_client check PATH OFFSET LEN BYTE\n"
		"  section_client pingpong PATH even|odd ROUNDS\n"
		"  section_client grow-map PATH NEWSIZE BYTE\n"
		"  section_client watch-size PATH EXPECT TIMEOUT_MS\n",
		why);
	exit(EXIT_USAGE);
}

/* A whole decimal number or a usage error: tests must not pass garbage silently. */
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

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t fd_size(int fd)
{
	struct stat st;
	if (fstat(fd, &st) != 0)
		die_errno("fstat");
	return (uint64_t)st.st_size;
}

static void *map_or_die(size_t len, int prot, int fd, uint64_t off)
{
	void *p = mmap(NULL, len, prot, MAP_SHARED, fd, (off_t)off);
	if (p == MAP_FAILED)
		die_errno("mmap");
	return p;
}

/* Reads the whole sidecar; its st_size may be 0 under FUSE, so read to EOF. */
static char *read_sidecar(const char *path)
{
	size_t cap = 4096, len = 0;
	char *buf, *meta_path;
	int fd;

	if (asprintf(&meta_path, "%s.meta", path) < 0)
		die_errno("asprintf");
	fd = open(meta_path, O_RDONLY);
	if (fd < 0)
		die_errno("open-meta");
	free(meta_path);
	buf = malloc(cap);
	if (buf == NULL)
		die_errno("malloc");
	for (;;) {
		ssize_t n;
		if (len + 1 >= cap) {
			cap *= 2;
			buf = realloc(buf, cap);
			if (buf == NULL)
				die_errno("realloc");
		}
		n = read(fd, buf + len, cap - len - 1);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			die_errno("read-meta");
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	buf[len] = '\0';
	close(fd);
	return buf;
}

static int cmd_create(const char *path, uint64_t size)
{
	char *meta, *line, *save = NULL;
	const char *status = NULL;
	int fd = open(path, O_RDWR | O_CREAT, 0644);

	if (fd < 0)
		die_errno("open");
	if (fd_size(fd) < size && ftruncate(fd, (off_t)size) != 0)
		die_errno("ftruncate");
	/* The fd stays open: the sidecar reports this process's own open. */
	meta = read_sidecar(path);
	for (line = strtok_r(meta, "\n", &save); line != NULL;
	     line = strtok_r(NULL, "\n", &save)) {
		if (strncmp(line, "status=", 7) == 0) {
			status = line + 7;
			break;
		}
	}
	if (status == NULL) {
		printf("no status line in %s.meta\n", path);
		return EXIT_MISMATCH;
	}
	printf("status=%s\n", status);
	printf("size=%" PRIu64 "\n", fd_size(fd));
	free(meta);
	close(fd);
	return 0;
}

static int cmd_open(const char *path)
{
	int fd = open(path, O_RDWR);
	if (fd < 0)
		die_errno("open");
	printf("size=%" PRIu64 "\n", fd_size(fd));
	close(fd);
	return 0;
}

static void check_range(uint64_t size, uint64_t off, uint64_t len)
{
	if (off > size || len > size - off)
		usage("OFFSET+LEN is past the end of the section");
}

static int cmd_fill(const char *path, uint64_t off, uint64_t len, int byte)
{
	int fd = open(path, O_RDWR);
	uint64_t size;
	unsigned char *p;

	if (fd < 0)
		die_errno("open");
	size = fd_size(fd);
	check_range(size, off, len);
	if (size > 0) { /* mmap of length 0 is EINVAL; an empty range needs no view */
		p = map_or_die((size_t)size, PROT_READ | PROT_WRITE, fd, 0);
		memset(p + off, byte, (size_t)len);
		if (msync(p, (size_t)size, MS_SYNC) != 0)
			die_errno("msync");
		if (munmap(p, (size_t)size) != 0)
			die_errno("munmap");
	}
	close(fd);
	printf("ok\n");
	return 0;
}

static int cmd_check(const char *path, uint64_t off, uint64_t len, int byte)
{
	int fd = open(path, O_RDONLY);
	uint64_t size, i;
	const unsigned char *p;

	if (fd < 0)
		die_errno("open");
	size = fd_size(fd);
	check_range(size, off, len);
	if (size > 0) {
		p = map_or_die((size_t)size, PROT_READ, fd, 0);
		for (i = off; i < off + len; i++) {
			if (p[i] != (unsigned char)byte) {
				printf("mismatch at %" PRIu64 ": %u\n", i, p[i]);
				return EXIT_MISMATCH;
			}
		}
		if (munmap((void *)p, (size_t)size) != 0)
			die_errno("munmap");
	}
	close(fd);
	printf("ok\n");
	return 0;
}

static int cmd_pingpong(const char *path, const char *role, uint64_t rounds)
{
	uint64_t parity, done = 0, v = 0, spins = 0;
	long page = sysconf(_SC_PAGESIZE);
	double deadline = now_s() + PINGPONG_TIMEOUT_S;
	uint64_t *counter;
	size_t len;
	int fd;

	if (strcmp(role, "even") == 0)
		parity = 0;
	else if (strcmp(role, "odd") == 0)
		parity = 1;
	else
		usage("ROLE must be even or odd");
	fd = open(path, O_RDWR);
	if (fd < 0)
		die_errno("open");
	len = (size_t)fd_size(fd);
	if (len < sizeof(uint64_t))
		usage("the section must hold at least 8 bytes");
	if (len > (size_t)page)
		len = (size_t)page;
	counter = map_or_die(len, PROT_READ | PROT_WRITE, fd, 0);

	while (done < rounds) {
		/* Atomic loads/stores: the peer is another process writing the same page. */
		v = le64toh(__atomic_load_n(counter, __ATOMIC_ACQUIRE));
		if (v % 2 == parity) {
			v++;
			__atomic_store_n(counter, htole64(v), __ATOMIC_RELEASE);
			done++;
			continue;
		}
		if (++spins % 1024 == 0 && now_s() > deadline) {
			printf("timeout at counter=%" PRIu64 "\n", v);
			return EXIT_TIMEOUT;
		}
		sched_yield();
	}
	printf("ok %" PRIu64 "\n", v);
	munmap(counter, len);
	close(fd);
	return 0;
}

static int cmd_grow_map(const char *path, uint64_t newsize, int byte)
{
	uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
	uint64_t old, grown, base, off, sum = 0;
	unsigned char *old_view = NULL, *tail;
	int fd = open(path, O_RDWR);

	if (fd < 0)
		die_errno("open");
	old = fd_size(fd);
	if (newsize < old)
		usage("NEWSIZE must be >= the current size");
	if (old > 0)
		old_view = map_or_die((size_t)old, PROT_READ, fd, 0);
	if (ftruncate(fd, (off_t)newsize) != 0)
		die_errno("ftruncate");
	grown = fd_size(fd);
	if (grown > old) {
		/* mmap offsets must be page-aligned: map from the page holding `old`. */
		base = old / page * page;
		tail = map_or_die((size_t)(grown - base), PROT_READ | PROT_WRITE, fd, base);
		for (off = old; off < grown; off = (off / page + 1) * page)
			tail[off - base] = (unsigned char)byte;
		if (msync(tail, (size_t)(grown - base), MS_SYNC) != 0)
			die_errno("msync");
		if (munmap(tail, (size_t)(grown - base)) != 0)
			die_errno("munmap");
	}
	/* A view must never fault because its section changed size: read every page. */
	for (off = 0; off < old; off += page)
		sum += ((volatile unsigned char *)old_view)[off];
	(void)sum;
	if (old_view != NULL && munmap(old_view, (size_t)old) != 0)
		die_errno("munmap");
	close(fd);
	printf("ok old=%" PRIu64 " new=%" PRIu64 "\n", old, grown);
	return 0;
}

static int cmd_watch_size(const char *path, uint64_t expect, uint64_t timeout_ms)
{
	double deadline = now_s() + (double)timeout_ms / 1000.0;
	struct timespec pause = {0, 1000 * 1000};
	uint64_t size;
	int fd = open(path, O_RDONLY);

	if (fd < 0)
		die_errno("open");
	for (;;) {
		size = fd_size(fd);
		if (size == expect)
			break;
		if (now_s() > deadline) {
			printf("timeout: size=%" PRIu64 "\n", size);
			return EXIT_MISMATCH;
		}
		nanosleep(&pause, NULL);
	}
	close(fd);
	printf("ok\n");
	return 0;
}

int main(int argc, char **argv)
{
	const char *cmd;

	/* Results go to a pipe; make each line visible even if we are killed. */
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc < 3)
		usage("missing arguments");
	cmd = argv[1];
	if (strcmp(cmd, "create") == 0 && argc == 4)
		return cmd_create(argv[2], parse_u64(argv[3], "SIZE must be a number"));
	if (strcmp(cmd, "open") == 0 && argc == 3)
		return cmd_open(argv[2]);
	if (strcmp(cmd, "fill") == 0 && argc == 6)
		return cmd_fill(argv[2], parse_u64(argv[3], "OFFSET must be a number"),
				parse_u64(argv[4], "LEN must be a number"), parse_byte(argv[5]));
	if (strcmp(cmd, "check") == 0 && argc == 6)
		return cmd_check(argv[2], parse_u64(argv[3], "OFFSET must be a number"),
				 parse_u64(argv[4], "LEN must be a number"), parse_byte(argv[5]));
	if (strcmp(cmd, "pingpong") == 0 && argc == 5)
		return cmd_pingpong(argv[2], argv[3], parse_u64(argv[4], "ROUNDS must be a number"));
	if (strcmp(cmd, "grow-map") == 0 && argc == 5)
		return cmd_grow_map(argv[2], parse_u64(argv[3], "NEWSIZE must be a number"),
				    parse_byte(argv[4]));
	if (strcmp(cmd, "watch-size") == 0 && argc == 5)
		return cmd_watch_size(argv[2], parse_u64(argv[3], "EXPECT must be a number"),
				      parse_u64(argv[4], "TIMEOUT_MS must be a number"));
	usage("unknown subcommand or wrong number of arguments");
}
