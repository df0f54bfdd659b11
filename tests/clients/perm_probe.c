/*
 * perm_probe: one file-system operation, as whichever user runs it, for the security
 * tests (run through `setpriv --reuid U --regid G --clear-groups`). It prints one line:
 * "ok" (with what the operation saw) or the errno's name ("EACCES"), and exits 0 either
 * way; 64 means a bad command line.
 *
 *   open PATH FLAGS [MODE [UMASK]]  FLAGS: r (O_RDONLY) w (O_WRONLY) b (O_RDWR), plus
 *                                   c (O_CREAT) x (O_EXCL) t (O_TRUNC); MODE and UMASK in
 *                                   octal. While holding the fd, reads PATH.meta:
 *                                   "ok status=<status>" (or "ok" if unreadable)
 *   read PATH                       open O_RDONLY and read: "ok <n>"
 *   cat PATH                        "ok" then the file's bytes on the following lines
 *   write PATH                      open O_WRONLY, write one byte at 0: "ok"
 *   pwrite PATH OFFSET LEN          open O_RDWR, write LEN bytes 'q' at OFFSET: "ok <n>"
 *   append PATH LEN                 open O_WRONLY|O_APPEND, write LEN bytes: "ok <n>"
 *   copy-range PATH OFFSET LEN      copy_file_range LEN bytes from PATH's start to OFFSET
 *                                   (one file: across filesystems the kernel says EXDEV)
 *   splice PATH OFFSET LEN          splice LEN bytes from a pipe into PATH at OFFSET
 *   sendfile PATH OFFSET LEN        sendfile LEN bytes of a temp file to PATH at OFFSET
 *   grow PATH SIZE                  open O_RDWR|O_CREAT 0644, ftruncate: "ok <size>"
 *   truncate PATH SIZE              truncate(2) by path: "ok"
 *   fallocate PATH OFFSET LEN [keep]  open O_RDWR, fallocate mode 0 (or KEEP_SIZE): "ok"
 *   mapr PATH                       O_RDONLY, mmap PROT_READ MAP_SHARED: "ok <first byte>"
 *   mapw PATH                       O_RDWR, mmap PROT_READ|PROT_WRITE MAP_SHARED, store
 *                                   'W' at 0: "ok"
 *   mapw-ro PATH                    O_RDONLY, then mmap PROT_WRITE MAP_SHARED: "ok"
 *   mapp PATH                       O_RDONLY, mmap MAP_PRIVATE read-write, store 'P': "ok"
 *   getxattr PATH NAME              "ok <value>"
 *   listxattr PATH                  "ok <number of names>"
 *   stat PATH                       "ok mode=<octal> uid=<n> gid=<n> size=<n>"
 *   ls PATH                         "ok <entries besides . and ..>"
 *   unlink PATH | rename OLD NEW | chmod PATH OCTAL | chown PATH UID GID
 *   utime-now PATH | utime-set PATH | mkdir PATH | mkfifo PATH | symlink TARGET PATH
 *   link OLD NEW                    each: "ok"
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

static void usage(void)
{
	fprintf(stderr, "usage: perm_probe OP PATH [ARGS] (see the source)\n");
	exit(64);
}

/* The answer for a failed step: the errno's name, and the run is over. */
static void __attribute__((noreturn)) fail(void)
{
	const char *name = strerrorname_np(errno);
	if (name != NULL)
		printf("%s\n", name);
	else
		printf("E%d\n", errno);
	exit(0);
}

static long long number(const char *s, int base)
{
	char *end;
	long long v;

	errno = 0;
	v = strtoll(s, &end, base);
	if (errno != 0 || *end != '\0' || end == s)
		usage();
	return v;
}

static int open_flags(const char *f)
{
	int flags = 0;

	for (; *f; f++) {
		switch (*f) {
		case 'r': flags |= O_RDONLY; break;
		case 'w': flags |= O_WRONLY; break;
		case 'b': flags |= O_RDWR; break;
		case 'c': flags |= O_CREAT; break;
		case 'x': flags |= O_EXCL; break;
		case 't': flags |= O_TRUNC; break;
		default: usage();
		}
	}
	return flags;
}

/* The status line of PATH.meta, or NULL. */
static char *meta_status(const char *path)
{
	static char buf[4096];
	char meta[8192];
	ssize_t n;
	char *line;
	int fd;

	snprintf(meta, sizeof meta, "%s.meta", path);
	fd = open(meta, O_RDONLY);
	if (fd < 0)
		return NULL;
	n = read(fd, buf, sizeof buf - 1);
	close(fd);
	if (n <= 0)
		return NULL;
	buf[n] = '\0';
	line = strstr(buf, "\nstatus=");
	if (line == NULL)
		return NULL;
	line++;
	line[strcspn(line, "\n")] = '\0';
	return line;
}

static void *map(int fd, int prot, int flags)
{
	struct stat st;
	void *p;

	if (fstat(fd, &st) != 0)
		fail();
	p = mmap(NULL, st.st_size > 0 ? (size_t)st.st_size : 4096, prot, flags, fd, 0);
	if (p == MAP_FAILED)
		fail();
	return p;
}

int main(int argc, char **argv)
{
	const char *op, *path;
	int fd;

	if (argc < 3)
		usage();
	op = argv[1];
	path = argv[2];

	if (!strcmp(op, "open") && argc >= 4 && argc <= 6) {
		int flags = open_flags(argv[3]);
		mode_t mode = argc >= 5 ? (mode_t)number(argv[4], 8) : 0644;
		char *status;

		if (argc == 6)
			umask((mode_t)number(argv[5], 8));
		if ((fd = open(path, flags, mode)) < 0)
			fail();
		status = meta_status(path);
		printf(status ? "ok %s\n" : "ok\n", status);
	} else if (!strcmp(op, "read") && argc == 3) {
		char buf[65536];
		ssize_t n;
		if ((fd = open(path, O_RDONLY)) < 0 || (n = read(fd, buf, sizeof buf)) < 0)
			fail();
		printf("ok %zd\n", n);
	} else if (!strcmp(op, "cat") && argc == 3) {
		char buf[65536];
		ssize_t n;
		if ((fd = open(path, O_RDONLY)) < 0 || (n = read(fd, buf, sizeof buf)) < 0)
			fail();
		printf("ok\n");
		fwrite(buf, 1, (size_t)n, stdout);
	} else if (!strcmp(op, "write") && argc == 3) {
		if ((fd = open(path, O_WRONLY)) < 0 || pwrite(fd, "w", 1, 0) != 1)
			fail();
		printf("ok\n");
	} else if (!strcmp(op, "pwrite") && argc == 5) {
		long long off = number(argv[3], 10), len = number(argv[4], 10);
		char *buf = malloc((size_t)len);
		ssize_t n;
		if (buf == NULL)
			fail();
		memset(buf, 'q', (size_t)len);
		if ((fd = open(path, O_RDWR)) < 0 || (n = pwrite(fd, buf, (size_t)len, off)) < 0)
			fail();
		printf("ok %zd\n", n);
	} else if (!strcmp(op, "append") && argc == 4) {
		long long len = number(argv[3], 10);
		char *buf = calloc(1, (size_t)len);
		ssize_t n;
		if (buf == NULL || (fd = open(path, O_WRONLY | O_APPEND)) < 0 ||
		    (n = write(fd, buf, (size_t)len)) < 0)
			fail();
		printf("ok %zd\n", n);
	} else if ((!strcmp(op, "copy-range") || !strcmp(op, "splice") ||
		    !strcmp(op, "sendfile")) &&
		   argc == 5) {
		/* The ways to grow a file without write(2): each must meet the quota too. */
		long long off = number(argv[3], 10), len = number(argv[4], 10);
		char *buf = calloc(1, (size_t)len);
		char tmp[] = "/tmp/perm_probe-XXXXXX";
		int src = mkstemp(tmp), p[2];
		loff_t in = 0, out = off;
		ssize_t n;
		if (buf == NULL || src < 0 || unlink(tmp) != 0 ||
		    write(src, buf, (size_t)len) != len || (fd = open(path, O_RDWR)) < 0)
			fail();
		if (!strcmp(op, "copy-range")) {
			n = copy_file_range(fd, &in, fd, &out, (size_t)len, 0);
		} else if (!strcmp(op, "splice")) {
			if (pipe(p) != 0 || fcntl(p[1], F_SETPIPE_SZ, (int)len) < 0 ||
			    write(p[1], buf, (size_t)len) != len)
				fail();
			n = splice(p[0], NULL, fd, &out, (size_t)len, 0);
		} else {
			if (lseek(fd, off, SEEK_SET) != off)
				fail();
			n = sendfile(fd, src, &in, (size_t)len);
		}
		if (n < 0)
			fail();
		printf("ok %zd\n", n);
	} else if (!strcmp(op, "grow") && argc == 4) {
		struct stat st;
		if ((fd = open(path, O_RDWR | O_CREAT, 0644)) < 0 ||
		    ftruncate(fd, number(argv[3], 10)) != 0 || fstat(fd, &st) != 0)
			fail();
		printf("ok %lld\n", (long long)st.st_size);
	} else if (!strcmp(op, "truncate") && argc == 4) {
		if (truncate(path, number(argv[3], 10)) != 0)
			fail();
		printf("ok\n");
	} else if (!strcmp(op, "fallocate") && (argc == 5 || argc == 6)) {
		int mode = 0;
		if (argc == 6) {
			if (strcmp(argv[5], "keep"))
				usage();
			mode = FALLOC_FL_KEEP_SIZE;
		}
		if ((fd = open(path, O_RDWR)) < 0 ||
		    fallocate(fd, mode, number(argv[3], 10), number(argv[4], 10)) != 0)
			fail();
		printf("ok\n");
	} else if (!strcmp(op, "mapr") && argc == 3) {
		unsigned char *p;
		if ((fd = open(path, O_RDONLY)) < 0)
			fail();
		p = map(fd, PROT_READ, MAP_SHARED);
		printf("ok %02x\n", p[0]);
	} else if (!strcmp(op, "mapw") && argc == 3) {
		char *p;
		if ((fd = open(path, O_RDWR)) < 0)
			fail();
		p = map(fd, PROT_READ | PROT_WRITE, MAP_SHARED);
		p[0] = 'W';
		printf("ok\n");
	} else if (!strcmp(op, "mapw-ro") && argc == 3) {
		if ((fd = open(path, O_RDONLY)) < 0)
			fail();
		map(fd, PROT_READ | PROT_WRITE, MAP_SHARED);
		printf("ok\n");
	} else if (!strcmp(op, "mapp") && argc == 3) {
		char *p;
		if ((fd = open(path, O_RDONLY)) < 0)
			fail();
		p = map(fd, PROT_READ | PROT_WRITE, MAP_PRIVATE);
		p[0] = 'P';
		printf("ok\n");
	} else if (!strcmp(op, "getxattr") && argc == 4) {
		char buf[4096];
		ssize_t n = getxattr(path, argv[3], buf, sizeof buf - 1);
		if (n < 0)
			fail();
		buf[n] = '\0';
		printf("ok %s\n", buf);
	} else if (!strcmp(op, "listxattr") && argc == 3) {
		char buf[4096];
		ssize_t n = listxattr(path, buf, sizeof buf), i;
		int count = 0;
		if (n < 0)
			fail();
		for (i = 0; i < n; i++)
			count += buf[i] == '\0';
		printf("ok %d\n", count);
	} else if (!strcmp(op, "stat") && argc == 3) {
		struct stat st;
		if (lstat(path, &st) != 0)
			fail();
		printf("ok mode=%o uid=%u gid=%u size=%lld\n", st.st_mode & 07777,
		       st.st_uid, st.st_gid, (long long)st.st_size);
	} else if (!strcmp(op, "ls") && argc == 3) {
		DIR *d = opendir(path);
		struct dirent *e;
		int count = 0;
		if (d == NULL)
			fail();
		errno = 0;
		while ((e = readdir(d)) != NULL)
			count += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
		if (errno != 0)
			fail();
		printf("ok %d\n", count);
	} else if (!strcmp(op, "unlink") && argc == 3) {
		if (unlink(path) != 0)
			fail();
		printf("ok\n");
	} else if (!strcmp(op, "rename") && argc == 4) {
		if (rename(path, argv[3]) != 0)
			fail();
		printf("ok\n");
	} else if (!strcmp(op, "chmod") && argc == 4) {
		if (chmod(path, (mode_t)number(argv[3], 8)) != 0)
			fail();
		printf("ok\n");
	} else if (!strcmp(op, "chown") && argc == 5) {
		if (chown(path, (uid_t)number(argv[3], 10), (gid_t)number(argv[4], 10)) != 0)
			fail();
		printf("ok\n");
	} else if (!strcmp(op, "utime-now") && argc == 3) {
		if (utimensat(AT_FDCWD, path, NULL, 0) != 0)
			fail();
		printf("ok\n");
	} else if (!strcmp(op, "utime-set") && argc == 3) {
		struct timespec t[2] = { { 1000000000, 0 }, { 1000000000, 0 } };
		if (utimensat(AT_FDCWD, path, t, 0) != 0)
			fail();
		printf("ok\n");
	} else if (!strcmp(op, "mkdir") && argc == 3) {
		if (mkdir(path, 0755) != 0)
			fail();
		printf("ok\n");
	} else if (!strcmp(op, "mkfifo") && argc == 3) {
		if (mkfifo(path, 0644) != 0)
			fail();
		printf("ok\n");
	} else if (!strcmp(op, "symlink") && argc == 4) {
		if (symlink(path, argv[3]) != 0)
			fail();
		printf("ok\n");
	} else if (!strcmp(op, "link") && argc == 4) {
		if (link(path, argv[3]) != 0)
			fail();
		printf("ok\n");
	} else {
		usage();
	}
	return 0;
}
