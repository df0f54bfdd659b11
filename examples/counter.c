/*
 * counter.c: a named section shared by processes, the way a Windows program uses
 * CreateFileMapping + MapViewOfFile, with plain POSIX calls on a sectionfs mount.
 *
 *   cc -O2 -Wall -o counter examples/counter.c
 *   ./counter /mnt/sections Counter 1000 & ./counter /mnt/sections Counter 1000; wait
 *   ./counter /mnt/sections Counter 0          # prints counter=2000
 *
 * What it does, in Windows terms:
 *   1. CreateFileMapping(..., "Counter"): open(O_RDWR|O_CREAT), then read Counter.meta
 *      for GetLastError's answer: prints "status=created" or "status=already_exists".
 *   2. The section is at least one page (the counter, a little-endian u64 at offset 0).
 *   3. Grow it to two pages (a second CreateFileMapping with a larger size), map only
 *      the new tail (MapViewOfFile with an offset) and write this pid at its start.
 *      Prints "size=<bytes>" and "tail=<offset>+<length>".
 *   4. ROUNDS times: take the section's lock (flock, the named mutex), add one to the
 *      counter through the view, release. Prints "counter=<value after the last add>".
 *
 * examples/counter.py and examples/counter.rs do the same and take the same lock, so any
 * mix of the three shares one counter. (A C-only program could use
 * __atomic_fetch_add on the view instead: InterlockedIncrement.)
 *
 * Exit status: 0 done; 1 a call failed ("counter: <call>: <strerror>" on stderr);
 * 64 bad command line.
 */
#define _GNU_SOURCE
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static void __attribute__((noreturn)) fail(const char *call)
{
	fprintf(stderr, "counter: %s: %s\n", call, strerror(errno));
	exit(1);
}

/* The sidecar's answer for this process's open: 1 created, 0 already there. */
static int created(const char *path)
{
	char meta[4096 + sizeof ".meta"], text[4096];
	snprintf(meta, sizeof meta, "%s.meta", path);
	FILE *f = fopen(meta, "r");
	if (!f)
		fail("open the .meta sidecar");
	int answer = -1;
	while (fgets(text, sizeof text, f)) {
		if (strcmp(text, "status=created\n") == 0)
			answer = 1;
		else if (strcmp(text, "status=already_exists\n") == 0)
			answer = 0;
	}
	fclose(f);
	if (answer < 0) {
		errno = EPROTO;
		fail("no status= in the .meta sidecar");
	}
	return answer;
}

/* Grows the section to at least `size`. If another process grew it past `size` first
 * and still holds it, ftruncate refuses that shrink (EBUSY; EPERM from older daemons)
 * and the size is fine anyway. (Every process grows to the same sizes, so a late
 * ftruncate never undoes a larger growth.) */
static void grow(int fd, off_t size)
{
	struct stat st;
	if (fstat(fd, &st) != 0)
		fail("fstat");
	if (st.st_size >= size)
		return;
	if (ftruncate(fd, size) == 0)
		return;
	if ((errno == EBUSY || errno == EPERM) && fstat(fd, &st) == 0 && st.st_size >= size)
		return;
	fail("ftruncate (grow)");
}

int main(int argc, char **argv)
{
	if (argc != 4) {
		fprintf(stderr, "usage: counter MOUNTPOINT NAME ROUNDS\n");
		return 64;
	}
	char path[4096];
	if (snprintf(path, sizeof path, "%s/%s", argv[1], argv[2]) >= (int)sizeof path) {
		fprintf(stderr, "counter: path too long\n");
		return 64;
	}
	char *end;
	long rounds = strtol(argv[3], &end, 10);
	if (*end || rounds < 0) {
		fprintf(stderr, "counter: ROUNDS must be a number >= 0\n");
		return 64;
	}
	long page = sysconf(_SC_PAGESIZE);

	/* 1. Open or create, and ask the sidecar which it was. */
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0)
		fail("open");
	printf("status=%s\n", created(path) ? "created" : "already_exists");

	/* 2. The counter's page. */
	grow(fd, page);
	volatile uint64_t *counter =
		mmap(NULL, page, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (counter == MAP_FAILED)
		fail("mmap the counter");

	/* 3. Grow, then map only the new tail. */
	grow(fd, 2 * page);
	struct stat st;
	if (fstat(fd, &st) != 0)
		fail("fstat");
	uint64_t *tail = mmap(NULL, page, PROT_READ | PROT_WRITE, MAP_SHARED, fd, page);
	if (tail == MAP_FAILED)
		fail("mmap the tail");
	tail[0] = htole64((uint64_t)getpid());
	printf("size=%jd\ntail=%ld+%ld\n", (intmax_t)st.st_size, page, page);

	/* 4. Add to the shared counter under the section's lock. */
	uint64_t value = 0;
	for (long i = 0; i < rounds || (rounds == 0 && i == 0); i++) {
		if (flock(fd, LOCK_EX) != 0)
			fail("flock");
		value = le64toh(*counter);
		if (rounds > 0)
			*counter = htole64(++value);
		if (flock(fd, LOCK_UN) != 0)
			fail("flock unlock");
	}
	printf("counter=%" PRIu64 "\n", value);

	munmap(tail, page);
	munmap((void *)counter, page);
	close(fd);
	return 0;
}
