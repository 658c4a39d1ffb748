/*
 * weft-cni-front: the executable a container runtime runs as the `weft` and `weft-ipam` CNI plugins.
 *
 * Node takes ~60 ms to start, longer than the whole ADD the reference plugins do, so the plugin the
 * runtime execs is this small C program. It forwards the invocation (its name, the CNI_* variables,
 * the config on stdin) over a unix socket to a warm Weft process on the node (`weft cni serve`, later
 * `weft agent`), which does all the work in TypeScript and answers with the exit code and stdout. When
 * nothing listens there, it runs the same code itself (the direct path) under Node.
 *
 * Socket: the config's "socket" field if present, else /run/weft/cni.sock.
 * Request:  "WEFT1\0" <plugin name>"\0" { "CNI_...=value\0" } "\0" <stdin bytes> EOF
 * Response: <exit code, one byte> <stdout bytes> EOF
 *
 * Direct path: `weft cni install` puts a directory "weft-cni" beside this executable, holding cni.mjs
 * (the plugin as one file), node_modules/koffi and "node" (a link to the Node that installed it). It
 * is found from /proc/self/exe, so nothing here names the checkout or package weft was installed from.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#define DEFAULT_SOCKET "/run/weft/cni.sock"
/* Longer than any ADD takes, shorter than a runtime's own CNI timeout (containerd: 4 min). */
#define ANSWER_TIMEOUT_S 120
#define RUNTIME_DIR "weft-cni"

extern char **environ;

struct buf {
	char *data;
	size_t len, cap;
};

static void append(struct buf *b, const void *p, size_t n)
{
	if (b->len + n > b->cap) {
		b->cap = (b->len + n) * 2 + 4096;
		b->data = realloc(b->data, b->cap);
		if (!b->data) {
			perror("weft: out of memory");
			exit(5);
		}
	}
	memcpy(b->data + b->len, p, n);
	b->len += n;
}

/* 0 at end of file, -1 on an error (errno says which, EAGAIN for a receive timeout). */
static int read_all(int fd, struct buf *b)
{
	char chunk[65536];
	for (;;) {
		ssize_t n = read(fd, chunk, sizeof chunk);
		if (n > 0)
			append(b, chunk, (size_t)n);
		else if (n == 0)
			return 0;
		else if (errno != EINTR)
			return -1;
	}
}

/* Writes all of p. On the socket it sends with MSG_NOSIGNAL: a server that hangs up is an error,
 * not a SIGPIPE that kills us. */
static int put_all(int fd, const char *p, size_t n, int is_socket)
{
	while (n > 0) {
		ssize_t w = is_socket ? send(fd, p, n, MSG_NOSIGNAL) : write(fd, p, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* The value of a top-level-looking "socket": "..." in the config; no escapes are allowed in it. */
static int socket_path(const struct buf *conf, char *out, size_t outlen)
{
	static const char key[] = "\"socket\"";
	const char *end = conf->data + conf->len;
	const char *p = memmem(conf->data, conf->len, key, sizeof key - 1);
	if (!p)
		return 0;
	p += sizeof key - 1;
	while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
		p++;
	if (p >= end || *p++ != ':')
		return 0;
	while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
		p++;
	if (p >= end || *p++ != '"')
		return 0;
	size_t n = 0;
	while (p < end && *p != '"' && *p != '\\' && n + 1 < outlen)
		out[n++] = *p++;
	if (p >= end || *p != '"')
		return 0;
	out[n] = 0;
	return n > 0;
}

static int served(const char *plugin, const struct buf *conf, const char *path)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	if (strlen(path) >= sizeof addr.sun_path)
		return -1;
	strcpy(addr.sun_path, path);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
		close(fd);
		return -1;
	}
	struct buf req = { 0 };
	append(&req, "WEFT1", 6);
	append(&req, plugin, strlen(plugin) + 1);
	for (char **e = environ; *e; e++)
		if (strncmp(*e, "CNI_", 4) == 0)
			append(&req, *e, strlen(*e) + 1);
	append(&req, "", 1);
	append(&req, conf->data, conf->len);
	if (put_all(fd, req.data, req.len, 1) < 0) {
		/* It hung up before taking the whole request, so it did none of the work: run it here. */
		close(fd);
		return -1;
	}
	shutdown(fd, SHUT_WR);
	struct timeval limit = { .tv_sec = ANSWER_TIMEOUT_S };
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
	struct buf res = { 0 };
	if (read_all(fd, &res) < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
		printf("{\"cniVersion\":\"1.1.0\",\"code\":11,\"msg\":\"the weft server at %s did not answer within %d s\",\"details\":\"try again; check the agent's log\"}\n", path, ANSWER_TIMEOUT_S);
		exit(1);
	}
	close(fd);
	if (res.len == 0) {
		/* The server took the request and died: the work may be half done, so no silent retry. */
		printf("{\"cniVersion\":\"1.1.0\",\"code\":11,\"msg\":\"the weft server at %s closed the connection without an answer\",\"details\":\"try again; check the agent's log\"}\n", path);
		exit(1);
	}
	if (put_all(1, res.data + 1, res.len - 1, 0) < 0)
		exit(5);
	return (unsigned char)res.data[0];
}

static void fail_install(const char *what, const char *path)
{
	printf("{\"cniVersion\":\"1.1.0\",\"code\":5,\"msg\":\"weft: %s %s: %s\",\"details\":\"reinstall the plugins (weft cni install --bin-dir DIR)\"}\n", what, path, strerror(errno));
	exit(1);
}

static void direct(const char *plugin, const struct buf *conf)
{
	int fd = memfd_create("weft-stdin", MFD_CLOEXEC);
	if (fd < 0 || put_all(fd, conf->data, conf->len, 0) < 0 || lseek(fd, 0, SEEK_SET) < 0 || dup2(fd, 0) < 0) {
		perror("weft: cannot pass stdin to the direct path");
		exit(5);
	}
	char dir[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", dir, sizeof dir - 1);
	if (n < 0)
		fail_install("cannot find its own file", "/proc/self/exe");
	dir[n] = 0;
	*strrchr(dir, '/') = 0;
	char node[PATH_MAX + 32], main_js[PATH_MAX + 32];
	snprintf(node, sizeof node, "%s/" RUNTIME_DIR "/node", dir);
	snprintf(main_js, sizeof main_js, "%s/" RUNTIME_DIR "/cni.mjs", dir);
	if (access(main_js, R_OK) < 0)
		fail_install("cannot read", main_js);
	char *argv[] = { node, main_js, (char *)plugin, NULL };
	execv(node, argv);
	/* The Node that installed the plugin is gone (upgraded or removed): any Node on PATH will do. */
	argv[0] = "node";
	setenv("PATH", "/usr/local/bin:/usr/bin:/bin", 0);
	execvp("node", argv);
	fail_install("cannot run", node);
}

int main(int argc, char **argv)
{
	(void)argc;
	const char *self = strrchr(argv[0], '/');
	self = self ? self + 1 : argv[0];
	const char *plugin = strcmp(self, "weft-ipam") == 0 ? "weft-ipam" : "weft";

	struct buf conf = { 0 };
	if (read_all(0, &conf) < 0) {
		perror("weft: cannot read the config on stdin");
		return 5;
	}
	append(&conf, "", 1);
	conf.len--;

	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	if (!socket_path(&conf, path, sizeof path))
		strcpy(path, DEFAULT_SOCKET);
	int code = served(plugin, &conf, path);
	if (code >= 0)
		return code;
	direct(plugin, &conf);
	return 1;
}
