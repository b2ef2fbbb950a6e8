/*
 * vfio-user-bench: a small vfio-user client and a ping-pong peer, in C, so that every server the
 * bench compares (ours, libvfio-user's samples, the ping-pong ceiling) is driven by the same
 * client. Compiled by bench/c.ts at run time with gcc; written for vfio-ts, nothing copied.
 *
 *   vfio-user-bench pong SOCKET
 *       Listens at SOCKET and answers every command with a reply of the size a vfio-user server
 *       would send (REGION_READ: header, access header and count bytes; REGION_WRITE: header and
 *       access header; anything else: the header alone), one recv and one send per message, no
 *       reply to a posted (NO_REPLY) command. One client at a time, client after client. This is
 *       the ceiling: a blocking C server with no protocol work.
 *
 *   vfio-user-bench client [-n N] [-r ROUNDS] [-p POSTED] -o OP... SOCKET[@BAR]...
 *       Connects to every SOCKET, negotiates VERSION on each, then runs ROUNDS rounds; in each
 *       round every OP runs N round trips (one request in flight) against every server in turn,
 *       so that all servers see the same machine (connecting to all first: a server that serves
 *       one client at a time is never kept waiting by another). OP is
 *         read:cfg:COUNT | read:bar:COUNT | write:bar:COUNT | posted:bar:COUNT
 *       (cfg = config space, region 7, offset 0; bar = region BAR of that server, offset 0,
 *       default 0). `posted` sends POSTED writes with NO_REPLY back to back, then one read, and
 *       times the lot (throughput with many in flight). Prints one JSON line per (server, op):
 *       round trips per second of every round, and p50/p99/p99.9 of every round trip in ns; then
 *       one per server with the number of messages it was sent (for CPU time per message).
 *
 * The wire (QEMU docs/interop/vfio-user.rst): a 16-byte header (u16 msg_id, u16 command,
 * u32 msg_size, u32 flags, u32 error), then for REGION_READ/WRITE { u64 offset; u32 region;
 * u32 count; u8 data[] }.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

enum { CMD_VERSION = 1, CMD_REGION_READ = 9, CMD_REGION_WRITE = 10 };
enum { F_REPLY = 0x1, F_NO_REPLY = 0x10, F_ERROR = 0x20 };
enum { HDR = 16, ACCESS = 16, MAX_MSG = 1 << 20, CONFIG_REGION = 7 };
enum { MAX_SERVERS = 16, MAX_OPS = 16 };

struct hdr {
    uint16_t id, cmd;
    uint32_t size, flags, error;
};

static void __attribute__((noreturn)) die(const char *what) {
    perror(what);
    exit(2);
}

static uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static void send_all(int fd, const void *buf, size_t len) {
    const char *p = buf;
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("send");
        }
        p += n;
        len -= (size_t)n;
    }
}

static void recv_all(int fd, void *buf, size_t len) {
    char *p = buf;
    while (len > 0) {
        ssize_t n = recv(fd, p, len, 0);
        if (n == 0) {
            fprintf(stderr, "vfio-user-bench: server closed the connection\n");
            exit(2);
        }
        if (n < 0) {
            if (errno == EINTR) continue;
            die("recv");
        }
        p += n;
        len -= (size_t)n;
    }
}

static struct sockaddr_un address(const char *path) {
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(a.sun_path)) {
        fprintf(stderr, "vfio-user-bench: socket path too long: %s\n", path);
        exit(2);
    }
    strcpy(a.sun_path, path);
    return a;
}

/* ---------------------------------------------------------------------------------------- */
/* pong: the ceiling                                                                         */
/* ---------------------------------------------------------------------------------------- */

static char pong_in[MAX_MSG + HDR + ACCESS];
static char pong_out[MAX_MSG + HDR + ACCESS];

/* Answers every whole message in buf[0..len); returns the bytes consumed. */
static size_t pong_answer(int fd, const char *buf, size_t len) {
    size_t at = 0;
    while (len - at >= HDR) {
        struct hdr h;
        memcpy(&h, buf + at, HDR);
        if (h.size < HDR || h.size > sizeof(pong_in)) {
            fprintf(stderr, "pong: bad msg_size %u\n", h.size);
            exit(2);
        }
        if (len - at < h.size) break;
        if (!(h.flags & F_NO_REPLY)) {
            size_t out = HDR;
            if (h.cmd == CMD_REGION_READ || h.cmd == CMD_REGION_WRITE) {
                uint32_t count;
                memcpy(&count, buf + at + HDR + 12, 4);
                memcpy(pong_out + HDR, buf + at + HDR, ACCESS);
                out += ACCESS + (h.cmd == CMD_REGION_READ ? count : 0);
            } else if (h.cmd == CMD_VERSION) {
                memset(pong_out + HDR, 0, 4); /* major 0, minor 0, no capabilities */
                out += 4;
            }
            struct hdr r = {.id = h.id, .cmd = h.cmd, .size = (uint32_t)out, .flags = F_REPLY};
            memcpy(pong_out, &r, HDR);
            send_all(fd, pong_out, out);
        }
        at += h.size;
    }
    return at;
}

static int __attribute__((noreturn)) pong(const char *path) {
    int ls = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (ls < 0) die("socket");
    struct sockaddr_un a = address(path);
    unlink(path);
    if (bind(ls, (struct sockaddr *)&a, sizeof(a)) < 0) die("bind");
    if (listen(ls, 8) < 0) die("listen");
    for (;;) {
        int fd = accept4(ls, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR) continue;
            die("accept");
        }
        size_t have = 0;
        for (;;) {
            ssize_t n = recv(fd, pong_in + have, sizeof(pong_in) - have, 0);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) break;
            have += (size_t)n;
            size_t used = pong_answer(fd, pong_in, have);
            memmove(pong_in, pong_in + used, have - used);
            have -= used;
        }
        close(fd);
    }
}

/* ---------------------------------------------------------------------------------------- */
/* client                                                                                     */
/* ---------------------------------------------------------------------------------------- */

enum kind { OP_READ, OP_WRITE, OP_POSTED };

struct op {
    enum kind kind;
    int cfg; /* config space, else the server's BAR */
    uint32_t count;
    const char *name;
};

struct server {
    const char *path;
    int fd;
    uint32_t bar;
    uint16_t next_id;
    unsigned long long messages; /* every message sent to it */
};

struct result {
    double *rates; /* round trips (or posted writes) per second, per round */
    uint64_t *lat; /* every round trip, ns */
    size_t nlat;
    unsigned unexpected; /* replies to posted writes, error replies */
};

static char cl_out[HDR + ACCESS + MAX_MSG];
static char cl_in[HDR + ACCESS + MAX_MSG];

static size_t build_access(struct server *s, const struct op *o, uint16_t cmd, uint32_t flags) {
    uint32_t data = cmd == CMD_REGION_WRITE ? o->count : 0;
    s->messages++;
    struct hdr h = {
        .id = s->next_id++, .cmd = cmd, .size = HDR + ACCESS + data, .flags = flags};
    uint64_t offset = 0;
    uint32_t region = o->cfg ? CONFIG_REGION : s->bar;
    memcpy(cl_out, &h, HDR);
    memcpy(cl_out + HDR, &offset, 8);
    memcpy(cl_out + HDR + 8, &region, 4);
    memcpy(cl_out + HDR + 12, &o->count, 4);
    memset(cl_out + HDR + ACCESS, 0, data);
    return h.size;
}

/* Reads one whole reply into cl_in; returns its header. */
static struct hdr read_reply(int fd) {
    struct hdr h;
    recv_all(fd, cl_in, HDR);
    memcpy(&h, cl_in, HDR);
    if (h.size < HDR || h.size > sizeof(cl_in)) {
        fprintf(stderr, "vfio-user-bench: bad reply size %u\n", h.size);
        exit(2);
    }
    recv_all(fd, cl_in + HDR, h.size - HDR);
    return h;
}

static unsigned round_trip(struct server *s, const struct op *o) {
    uint16_t cmd = o->kind == OP_READ ? CMD_REGION_READ : CMD_REGION_WRITE;
    size_t len = build_access(s, o, cmd, 0);
    send_all(s->fd, cl_out, len);
    struct hdr h = read_reply(s->fd);
    return (h.flags & F_ERROR) != 0;
}

/*
 * `n` posted writes back to back, then one read whose reply marks the end. Replies that arrive
 * meanwhile (a server answering posted writes) are read and counted, so that neither side can
 * block the other for good.
 */
static unsigned posted_burst(struct server *s, const struct op *o, unsigned n) {
    unsigned unexpected = 0;
    struct op rd = {.kind = OP_READ, .cfg = 1, .count = 4};
    for (unsigned i = 0; i <= n; i++) {
        size_t len = i < n ? build_access(s, o, CMD_REGION_WRITE, F_NO_REPLY)
                           : build_access(s, &rd, CMD_REGION_READ, 0);
        uint16_t last_id = (uint16_t)(s->next_id - 1);
        size_t sent = 0;
        while (sent < len) {
            struct pollfd p = {.fd = s->fd, .events = POLLIN | POLLOUT};
            if (poll(&p, 1, -1) < 0) {
                if (errno == EINTR) continue;
                die("poll");
            }
            if (p.revents & POLLIN) {
                read_reply(s->fd);
                unexpected++;
            }
            if (p.revents & POLLOUT) {
                ssize_t k = send(s->fd, cl_out + sent, len - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
                if (k < 0 && errno != EAGAIN && errno != EINTR) die("send");
                if (k > 0) sent += (size_t)k;
            }
        }
        if (i == n) {
            for (;;) {
                struct hdr h = read_reply(s->fd);
                if (h.id == last_id && h.cmd == CMD_REGION_READ) break;
                unexpected++;
            }
        }
    }
    return unexpected;
}

static void negotiate(struct server *s) {
    static const char json[] =
        "{\"capabilities\":{\"max_msg_fds\":8,\"max_data_xfer_size\":1048576}}";
    uint16_t ver[2] = {0, 0};
    size_t len = HDR + 4 + sizeof(json); /* the JSON with its NUL, as QEMU sends it */
    struct hdr h = {.id = s->next_id++, .cmd = CMD_VERSION, .size = (uint32_t)len};
    s->messages++;
    memcpy(cl_out, &h, HDR);
    memcpy(cl_out + HDR, ver, 4);
    memcpy(cl_out + HDR + 4, json, sizeof(json));
    send_all(s->fd, cl_out, len);
    struct hdr r = read_reply(s->fd);
    if (r.flags & F_ERROR) {
        fprintf(stderr, "vfio-user-bench: %s refused VERSION (errno %u)\n", s->path, r.error);
        exit(2);
    }
}

static void connect_server(struct server *s) {
    struct sockaddr_un a = address(s->path);
    s->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s->fd < 0) die("socket");
    if (connect(s->fd, (struct sockaddr *)&a, sizeof(a)) < 0) die(s->path);
    negotiate(s);
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static uint64_t pct(const uint64_t *v, size_t n, double p) {
    size_t i = (size_t)(p * (double)n);
    return n == 0 ? 0 : v[i < n ? i : n - 1];
}

static int parse_op(const char *arg, struct op *o) {
    char kind[16], where[8];
    unsigned count;
    if (sscanf(arg, "%15[a-z]:%7[a-z]:%u", kind, where, &count) != 3) return -1;
    if (!strcmp(kind, "read")) o->kind = OP_READ;
    else if (!strcmp(kind, "write")) o->kind = OP_WRITE;
    else if (!strcmp(kind, "posted")) o->kind = OP_POSTED;
    else return -1;
    if (!strcmp(where, "cfg")) o->cfg = 1;
    else if (!strcmp(where, "bar")) o->cfg = 0;
    else return -1;
    if (count == 0 || count > MAX_MSG) return -1;
    o->count = count;
    o->name = arg;
    return 0;
}

static int client(int argc, char **argv) {
    unsigned n = 2000, rounds = 11, posted = 20000;
    struct op ops[MAX_OPS];
    struct server servers[MAX_SERVERS];
    int nops = 0, nservers = 0, c;
    while ((c = getopt(argc, argv, "n:r:p:o:")) != -1) {
        switch (c) {
        case 'n': n = (unsigned)atoi(optarg); break;
        case 'r': rounds = (unsigned)atoi(optarg); break;
        case 'p': posted = (unsigned)atoi(optarg); break;
        case 'o':
            if (nops == MAX_OPS || parse_op(optarg, &ops[nops]) < 0) {
                fprintf(stderr, "vfio-user-bench: bad op %s\n", optarg);
                return 2;
            }
            nops++;
            break;
        default: return 2;
        }
    }
    for (int i = optind; i < argc && nservers < MAX_SERVERS; i++) {
        struct server *s = &servers[nservers++];
        char *at = strrchr(argv[i], '@');
        s->bar = 0;
        if (at) {
            *at = '\0';
            s->bar = (uint32_t)atoi(at + 1);
        }
        s->path = argv[i];
        s->next_id = 0;
        s->messages = 0;
    }
    if (nservers == 0 || nops == 0 || n == 0 || rounds == 0) {
        fprintf(stderr, "usage: vfio-user-bench client [-n N] [-r ROUNDS] [-p POSTED] -o OP... "
                        "SOCKET[@BAR]...\n");
        return 2;
    }
    for (int i = 0; i < nservers; i++) connect_server(&servers[i]);
    static struct result res[MAX_SERVERS][MAX_OPS];
    for (int s = 0; s < nservers; s++)
        for (int k = 0; k < nops; k++) {
            res[s][k].rates = calloc(rounds, sizeof(double));
            res[s][k].lat = calloc((size_t)rounds * n, sizeof(uint64_t));
            if (!res[s][k].rates || !res[s][k].lat) die("calloc");
        }
    /* Warm-up: a tenth of a round of every op on every server. */
    for (int s = 0; s < nservers; s++)
        for (int k = 0; k < nops; k++)
            for (unsigned i = 0; i < n / 10 + 1; i++)
                if (ops[k].kind != OP_POSTED) round_trip(&servers[s], &ops[k]);
    for (unsigned r = 0; r < rounds; r++) {
        for (int k = 0; k < nops; k++) {
            for (int s = 0; s < nservers; s++) {
                struct server *sv = &servers[s];
                struct result *out = &res[s][k];
                uint64_t t0 = now_ns();
                if (ops[k].kind == OP_POSTED) {
                    out->unexpected += posted_burst(sv, &ops[k], posted);
                    out->rates[r] = (double)posted * 1e9 / (double)(now_ns() - t0);
                    continue;
                }
                for (unsigned i = 0; i < n; i++) {
                    uint64_t t = now_ns();
                    out->unexpected += round_trip(sv, &ops[k]);
                    out->lat[out->nlat++] = now_ns() - t;
                }
                out->rates[r] = (double)n * 1e9 / (double)(now_ns() - t0);
            }
        }
    }
    for (int s = 0; s < nservers; s++) {
        for (int k = 0; k < nops; k++) {
            struct result *o = &res[s][k];
            qsort(o->lat, o->nlat, sizeof(uint64_t), cmp_u64);
            printf("{\"server\":%d,\"op\":\"%s\",\"rates\":[", s, ops[k].name);
            for (unsigned r = 0; r < rounds; r++) printf("%s%.0f", r ? "," : "", o->rates[r]);
            printf("],\"p50\":%llu,\"p99\":%llu,\"p999\":%llu,\"unexpected\":%u}\n",
                   (unsigned long long)pct(o->lat, o->nlat, 0.5),
                   (unsigned long long)pct(o->lat, o->nlat, 0.99),
                   (unsigned long long)pct(o->lat, o->nlat, 0.999), o->unexpected);
        }
    }
    for (int s = 0; s < nservers; s++)
        printf("{\"server\":%d,\"messages\":%llu}\n", s, servers[s].messages);
    for (int i = 0; i < nservers; i++) close(servers[i].fd);
    return 0;
}

int main(int argc, char **argv) {
    signal(SIGPIPE, SIG_IGN);
    if (argc >= 3 && !strcmp(argv[1], "pong")) return pong(argv[2]);
    if (argc >= 2 && !strcmp(argv[1], "client")) return client(argc - 1, argv + 1);
    fprintf(stderr, "usage: vfio-user-bench pong SOCKET | client [options] SOCKET[@BAR]...\n");
    return 2;
}
