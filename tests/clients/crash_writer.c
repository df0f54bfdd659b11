/*
 * crash_writer: a writer for the crash, passthrough and unmount tests. It reports
 * only what is durable, so a test that kills the daemon under it can check that
 * nothing it acknowledged was lost.
 *
 *   write PATH SEED MAX_MS   append records with pwrite (growing the section by
 *                            writing past its end, and every few records by
 *                            ftruncate), fsync after each one
 *   map PATH SEED MAX_MS     grow the section by ftruncate in steps, map it
 *                            MAP_SHARED, append records through the view,
 *                            msync(MS_SYNC) after each one
 *   hold PATH SIZE           map the section's first SIZE bytes MAP_SHARED (growing
 *                            it first if smaller), print "ready", then obey stdin:
 *                              fill BYTE    memset the view, msync, read it back: "ok"
 *                              check BYTE   verify the view: "ok" or "mismatch AT"
 *                              close        close the fd, keep the view: "ok"
 *                            and exit 0 at end of input.
 *
 * A record is [u32 payload length][u32 index][payload][u32 crc32 of all before],
 * little-endian, crc32 as zlib's. write and map print, each only once durable:
 *   rec OFFSET LEN           the record of LEN bytes at OFFSET (index = its ordinal)
 *   size N                   the section has at least N bytes
 * They stop at MAX_MS with status 0, or at the first failing call with "stop: <op>:
 * <strerror> (errno=N)" on stderr and status 2 (a fault in a view: "stop: SIGBUS",
 * status 3). Acks go out with write(2), unbuffered, so a crash loses none.
 * Exit codes: 0 done; 2 a syscall failed; 3 SIGBUS; 4 hold: msync failed;
 * 5 hold: mismatch; 64 bad command line.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define EXIT_SYSCALL 2
#define EXIT_SIGBUS 3
#define EXIT_MSYNC 4
#define EXIT_MISMATCH 5
#define EXIT_USAGE 64

#define MAX_PAYLOAD 3000
#define GROW_EVERY 8		/* write: ftruncate every this many records */
#define MAP_STEP (32 * 1024)	/* map: grow by this much at a time */
#define PAGE 4096

static void __attribute__((noreturn)) stop(const char *op)
{
	int e = errno;
	fprintf(stderr, "stop: %s: %s (errno=%d)\n", op, strerror(e), e);
	exit(EXIT_SYSCALL);
}

static void on_sigbus(int sig)
{
	static const char msg[] = "stop: SIGBUS\n";
	(void)sig;
	if (write(2, msg, sizeof msg - 1) < 0) {
		/* Nothing left to report it to. */
	}
	_exit(EXIT_SIGBUS);
}

static void __attribute__((noreturn)) usage(void)
{
	fprintf(stderr, "usage: crash_writer write|map PATH SEED MAX_MS\n"
			"       crash_writer hold PATH SIZE\n");
	exit(EXIT_USAGE);
}

static uint64_t parse_u64(const char *s)
{
	char *end;
	unsigned long long v;

	if (*s < '0' || *s > '9')
		usage();
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno != 0 || *end != '\0')
		usage();
	return (uint64_t)v;
}

/* One ack line, in one write(2): a reader never sees half of it. */
static void ack(const char *fmt, ...)
{
	char line[96];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof line, fmt, ap);
	va_end(ap);
	if (write(1, line, (size_t)n) != n)
		stop("write ack");
}

static uint32_t crc32(const uint8_t *p, size_t n)
{
	uint32_t c = 0xffffffffu;

	while (n--) {
		c ^= *p++;
		for (int k = 0; k < 8; k++)
			c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1)));
	}
	return ~c;
}

static uint64_t rng;

static uint64_t next_rand(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

static void put_u32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

/* Builds record `index` into buf; returns its length. */
static size_t make_record(uint8_t *buf, uint32_t index)
{
	uint32_t len = 1 + (uint32_t)(next_rand() % MAX_PAYLOAD);

	put_u32(buf, len);
	put_u32(buf + 4, index);
	for (uint32_t i = 0; i < len; i++)
		buf[8 + i] = (uint8_t)next_rand();
	put_u32(buf + 8 + len, crc32(buf, 8 + len));
	return 12 + (size_t)len;
}

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static uint64_t round_up(uint64_t v, uint64_t to)
{
	return (v + to - 1) / to * to;
}

static int cmd_write(const char *path, double deadline)
{
	uint8_t rec[MAX_PAYLOAD + 12];
	uint64_t off = 0;
	int fd = open(path, O_RDWR | O_CREAT, 0644);

	if (fd < 0)
		stop("open");
	for (uint32_t index = 0; now_ms() < deadline; index++) {
		size_t n = make_record(rec, index);
		size_t done = 0;
		uint64_t grown = 0;

		while (done < n) {
			ssize_t w = pwrite(fd, rec + done, n - done, (off_t)(off + done));
			if (w < 0 && errno == EINTR)
				continue;
			if (w <= 0)
				stop("pwrite");
			done += (size_t)w;
		}
		if (index % GROW_EVERY == GROW_EVERY - 1) {
			grown = round_up(off + n + 1, PAGE) + 3 * PAGE;
			if (ftruncate(fd, (off_t)grown) != 0)
				stop("ftruncate");
		}
		if (fsync(fd) != 0)
			stop("fsync");
		ack("rec %llu %zu\n", (unsigned long long)off, n);
		if (grown)
			ack("size %llu\n", (unsigned long long)grown);
		off += n;
	}
	return 0;
}

static int cmd_map(const char *path, double deadline)
{
	uint8_t rec[MAX_PAYLOAD + 12];
	uint64_t off = 0, size = 0;
	uint8_t *view = NULL;
	int fd = open(path, O_RDWR | O_CREAT, 0644);

	if (fd < 0)
		stop("open");
	for (uint32_t index = 0; now_ms() < deadline; index++) {
		size_t n = make_record(rec, index);
		uint64_t start;

		if (off + n > size) {
			uint64_t want = round_up(off + n, MAP_STEP) + MAP_STEP;

			if (ftruncate(fd, (off_t)want) != 0)
				stop("ftruncate");
			if (fsync(fd) != 0)
				stop("fsync");
			if (view && munmap(view, size) != 0)
				stop("munmap");
			view = mmap(NULL, want, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
			if (view == MAP_FAILED)
				stop("mmap");
			size = want;
			ack("size %llu\n", (unsigned long long)size);
		}
		memcpy(view + off, rec, n);
		start = off / PAGE * PAGE;
		if (msync(view + start, off + n - start, MS_SYNC) != 0)
			stop("msync");
		ack("rec %llu %zu\n", (unsigned long long)off, n);
		off += n;
	}
	return 0;
}

static int cmd_hold(const char *path, uint64_t size)
{
	char line[64];
	struct stat st;
	uint8_t *view;
	int fd = open(path, O_RDWR | O_CREAT, 0644);

	if (fd < 0)
		stop("open");
	if (fstat(fd, &st) != 0)
		stop("fstat");
	if ((uint64_t)st.st_size < size && ftruncate(fd, (off_t)size) != 0)
		stop("ftruncate");
	view = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (view == MAP_FAILED)
		stop("mmap");
	ack("ready\n");
	while (fgets(line, sizeof line, stdin)) {
		unsigned byte;

		if (sscanf(line, "fill %u", &byte) == 1) {
			memset(view, (int)byte, size);
			if (msync(view, size, MS_SYNC) != 0) {
				fprintf(stderr, "stop: msync: %s (errno=%d)\n", strerror(errno), errno);
				return EXIT_MSYNC;
			}
		} else if (sscanf(line, "check %u", &byte) == 1) {
		} else if (strcmp(line, "close\n") == 0) {
			if (close(fd) != 0)
				stop("close");
			ack("ok\n");
			continue;
		} else {
			usage();
		}
		for (uint64_t i = 0; i < size; i++) {
			if (view[i] != (uint8_t)byte) {
				ack("mismatch %llu\n", (unsigned long long)i);
				return EXIT_MISMATCH;
			}
		}
		ack("ok\n");
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_sigbus;
	sigaction(SIGBUS, &sa, NULL);
	/* A test that stops reading acks must not kill us with SIGPIPE mid-record. */
	signal(SIGPIPE, SIG_IGN);

	if (argc == 5 && (strcmp(argv[1], "write") == 0 || strcmp(argv[1], "map") == 0)) {
		double deadline = now_ms() + (double)parse_u64(argv[4]);

		rng = parse_u64(argv[3]) * 2654435761u + 1;
		if (argv[1][0] == 'w')
			return cmd_write(argv[2], deadline);
		return cmd_map(argv[2], deadline);
	}
	if (argc == 4 && strcmp(argv[1], "hold") == 0) {
		uint64_t size = parse_u64(argv[3]);

		if (size == 0)
			usage();
		return cmd_hold(argv[2], size);
	}
	usage();
}
