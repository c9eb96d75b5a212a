/*
 * A minimal cachefiles on-demand daemon in C: the baseline lazysnap's fscache
 * worker is measured against in bench/fscache. It serves every cookie from
 * one local image file: OPEN -> copen <size>, READ -> pread + pwrite into the
 * anon fd from a page-aligned buffer + READ_COMPLETE ioctl, CLOSE -> close.
 * Single-threaded, one request at a time. Not part of lazysnap itself.
 *
 *   cdaemon CACHE_DIR TAG IMAGE     (runs until SIGTERM; prints "reads=N bytes=M")
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#define MSG_MAX 1024
#define IOC_READ_COMPLETE 0x40049801
#define BUF_SIZE (4u << 20)

struct msg_hdr { uint32_t id, opcode, len, object_id; };
struct open_body { uint32_t volume_key_size, cookie_key_size, fd, flags; };
struct read_body { uint64_t off, len; };

/* object id -> anon fd */
#define MAX_OBJ 4096
static int fds[MAX_OBJ];
static uint32_t ids[MAX_OBJ];
static int nobj;
static void remember(uint32_t id, int fd) { if (nobj < MAX_OBJ) { ids[nobj] = id; fds[nobj++] = fd; } }
static int fd_of(uint32_t id) { for (int i = 0; i < nobj; i++) if (ids[i] == id) return fds[i]; return -1; }
static void forget(uint32_t id) {
	for (int i = 0; i < nobj; i++) if (ids[i] == id) { close(fds[i]); fds[i] = fds[--nobj]; ids[i] = ids[nobj]; return; }
}

static volatile sig_atomic_t stop;
static void on_term(int sig) { (void)sig; stop = 1; }

static void cmd(int dev, const char *s) {
	if (write(dev, s, strlen(s)) < 0) { fprintf(stderr, "cdaemon: '%s': %s\n", s, strerror(errno)); exit(1); }
}

int main(int argc, char **argv) {
	if (argc != 4) { fprintf(stderr, "usage: cdaemon CACHE_DIR TAG IMAGE\n"); return 2; }
	int img = open(argv[3], O_RDONLY);
	struct stat st;
	if (img < 0 || fstat(img, &st) < 0) { perror(argv[3]); return 1; }
	int dev = open("/dev/cachefiles", O_RDWR);
	if (dev < 0) { perror("/dev/cachefiles"); return 1; }
	char line[512];
	snprintf(line, sizeof line, "dir %s", argv[1]); cmd(dev, line);
	snprintf(line, sizeof line, "tag %s", argv[2]); cmd(dev, line);
	cmd(dev, "bind ondemand");
	signal(SIGTERM, on_term);
	signal(SIGINT, on_term);

	void *buf;
	if (posix_memalign(&buf, 4096, BUF_SIZE)) return 1;
	unsigned long long reads = 0, bytes = 0;
	char m[MSG_MAX];
	struct pollfd pfd = { .fd = dev, .events = POLLIN };
	printf("ready\n");
	fflush(stdout);
	while (!stop) {
		if (poll(&pfd, 1, 200) <= 0) continue;
		ssize_t n = read(dev, m, sizeof m);
		if (n <= 0) continue;
		struct msg_hdr *h = (struct msg_hdr *)m;
		if (h->opcode == 0) {
			struct open_body *o = (struct open_body *)(m + sizeof *h);
			remember(h->object_id, (int)o->fd);
			snprintf(line, sizeof line, "copen %u,%lld", h->id, (long long)st.st_size);
			cmd(dev, line);
		} else if (h->opcode == 2) {
			struct read_body *r = (struct read_body *)(m + sizeof *h);
			int afd = fd_of(h->object_id);
			uint64_t off = r->off & ~4095ull, end = (r->off + r->len + 4095) & ~4095ull;
			while (off < end) {
				size_t want = end - off > BUF_SIZE ? BUF_SIZE : end - off;
				memset(buf, 0, want);
				if (pread(img, buf, want, off) < 0) break;
				if (pwrite(afd, buf, want, off) < 0) { perror("pwrite"); break; }
				off += want;
				bytes += want;
			}
			ioctl(afd, IOC_READ_COMPLETE, h->id);
			reads++;
		} else if (h->opcode == 1) {
			forget(h->object_id);
		}
	}
	printf("reads=%llu bytes=%llu\n", reads, bytes);
	return 0;
}

