/* The load generator of bench_authorize, in C: Asterisk's side of FastAGI at a small cost.

   The generator shares the machine's two cores with the servers it measures. Written in Python it
   took 30-60% of a core at saturation, about half of what the bare server itself took, and that CPU
   is taken from the servers. This one plays the same part, byte for byte: each request is one
   connection, the environment block as `bench_authorize._env` writes it (it reads the blocks from
   its standard input, one per request, each ending in an empty line), `200 result=1` to every line
   the server sends, until the server closes. Closed loop: CONCURRENCY channels, each placing its
   next request when the last is answered. Open loop: Poisson arrivals at RATE a second, started on
   a kernel timer (timerfd), each latency counted from its due time.

   Usage: agi_load PORT closed CONCURRENCY SEED < environments
          agi_load PORT open RATE SEED < environments
   Writes one line per request answered, "latency_ns late_ns" (late: how long after its due time
   the request was started; 0 in a closed loop), then "# cpu S elapsed S failed N": its own CPU
   time, the time from the first request to the last answer, and the requests that failed. */

#define _GNU_SOURCE
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define REPLY "200 result=1\n"
#define TIMER_TAG UINT64_MAX

typedef struct {
    int fd;
    long k;           /* the request's index */
    int64_t due;      /* open loop: when it was due; closed loop: when it started */
    int64_t late;
    char *out;        /* what is still to be written */
    size_t out_len, out_cap;
    int connected;
} conn_t;

static char *input;
static size_t *env_end; /* where each request's environment ends; the next one starts there */
static long requests;
static int64_t *dues;
static int64_t *latency, *lateness;
static long answered, failed, inflight;
static int ep;
static struct sockaddr_in server;

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void die(const char *what) {
    perror(what);
    exit(2);
}

static void read_environments(void) {
    size_t cap = 1 << 20, len = 0;
    input = malloc(cap);
    for (;;) {
        if (len == cap && !(input = realloc(input, cap *= 2)))
            die("realloc");
        ssize_t got = read(0, input + len, cap - len);
        if (got < 0)
            die("read");
        if (got == 0)
            break;
        len += (size_t)got;
    }
    long n = 0;
    if (!(env_end = malloc(sizeof(size_t) * (len / 2 + 1)))) /* each block is two bytes at least */
        die("malloc");
    for (size_t i = 0; i + 1 < len; i++)
        if (input[i] == '\n' && input[i + 1] == '\n')
            env_end[n++] = ++i + 1;
    requests = n;
}

/* Queue bytes for the connection and write what the socket takes now. */
static int send_bytes(conn_t *c, const char *data, size_t len) {
    if (c->out_len == 0) {
        ssize_t put = write(c->fd, data, len);
        if (put < 0 && errno != EAGAIN)
            return -1;
        if (put > 0) {
            data += put;
            len -= (size_t)put;
        }
        if (len == 0)
            return 0;
    }
    if (c->out_len + len > c->out_cap) {
        c->out_cap = (c->out_len + len) * 2;
        if (!(c->out = realloc(c->out, c->out_cap)))
            die("realloc");
    }
    memcpy(c->out + c->out_len, data, len);
    c->out_len += len;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
    return epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
}

static int flush(conn_t *c) {
    ssize_t put = write(c->fd, c->out, c->out_len);
    if (put < 0)
        return errno == EAGAIN ? 0 : -1;
    memmove(c->out, c->out + put, c->out_len - (size_t)put);
    c->out_len -= (size_t)put;
    if (c->out_len == 0) {
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        return epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
    }
    return 0;
}

static void start(long k, int64_t due) {
    conn_t *c = calloc(1, sizeof(conn_t));
    int64_t now = now_ns();
    c->k = k;
    c->due = due ? due : now;
    c->late = due ? now - due : 0;
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0)
        die("socket");
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one); /* as asyncio's transports */
    if (connect(c->fd, (struct sockaddr *)&server, sizeof server) < 0 && errno != EINPROGRESS) {
        failed++; /* refused at once: a closed loop starts the next one in this channel */
        close(c->fd);
        free(c);
        return;
    }
    inflight++;
    struct epoll_event ev = {.events = EPOLLOUT | EPOLLIN, .data.ptr = c};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) < 0)
        die("epoll_ctl");
}

/* The conversation is over: counted as answered (the server closed it) or failed. */
static void finish(conn_t *c, int ok) {
    if (ok) {
        latency[answered] = now_ns() - c->due;
        lateness[answered] = c->late;
        answered++;
    } else {
        failed++;
    }
    inflight--;
    close(c->fd);
    free(c->out);
    free(c);
}

static void on_event(conn_t *c, uint32_t events) {
    if (!c->connected && (events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) {
            finish(c, 0);
            return;
        }
        c->connected = 1;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        size_t from = c->k ? env_end[c->k - 1] : 0;
        if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev) < 0 || send_bytes(c, input + from, env_end[c->k] - from) < 0) {
            finish(c, 0);
            return;
        }
        events &= ~(uint32_t)EPOLLOUT;
    }
    if ((events & EPOLLOUT) && c->out_len && flush(c) < 0) {
        finish(c, 0);
        return;
    }
    if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
        char buf[4096];
        for (;;) {
            ssize_t got = read(c->fd, buf, sizeof buf);
            if (got == 0) {
                finish(c, 1);
                return;
            }
            if (got < 0) {
                if (errno == EAGAIN)
                    return;
                finish(c, 0);
                return;
            }
            char replies[sizeof buf * (sizeof REPLY - 1)];
            size_t n = 0;
            for (ssize_t i = 0; i < got; i++)
                if (buf[i] == '\n') {
                    memcpy(replies + n, REPLY, sizeof REPLY - 1);
                    n += sizeof REPLY - 1;
                }
            if (n && send_bytes(c, replies, n) < 0) {
                finish(c, 0);
                return;
            }
        }
    }
}

/* A closed loop's channels each place their next call as soon as the last one ends (also one
   refused at once). */
static void refill(long channels, long *next) {
    while (*next < requests && inflight < channels) {
        start(*next, 0);
        (*next)++;
    }
}

/* splitmix64: the arrivals' random numbers, the same for a seed on every machine. */
static uint64_t rng;
static double uniform(void) {
    uint64_t z = (rng += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    z ^= z >> 31;
    return ((double)(z >> 11) + 0.5) / 9007199254740992.0; /* in (0, 1) */
}

static void arm(int tfd, int64_t when) {
    struct itimerspec spec = {{0, 0}, {when / 1000000000, when % 1000000000}};
    if (spec.it_value.tv_sec == 0 && spec.it_value.tv_nsec == 0)
        spec.it_value.tv_nsec = 1;
    if (timerfd_settime(tfd, TFD_TIMER_ABSTIME, &spec, NULL) < 0)
        die("timerfd_settime");
}

int main(int argc, char **argv) {
    if (argc != 5 || (strcmp(argv[2], "closed") && strcmp(argv[2], "open"))) {
        fprintf(stderr, "usage: %s PORT closed CONCURRENCY SEED | PORT open RATE SEED  < environments\n", argv[0]);
        return 2;
    }
    int open_loop = strcmp(argv[2], "open") == 0;
    double load = atof(argv[3]);
    rng = strtoull(argv[4], NULL, 10);
    read_environments();
    latency = malloc(sizeof(int64_t) * (size_t)(requests + 1));
    lateness = malloc(sizeof(int64_t) * (size_t)(requests + 1));
    struct rlimit files;
    if (getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur < files.rlim_max) {
        files.rlim_cur = files.rlim_max; /* a stalled server can leave many requests open */
        setrlimit(RLIMIT_NOFILE, &files);
    }
    server.sin_family = AF_INET;
    server.sin_port = htons((uint16_t)atoi(argv[1]));
    server.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if ((ep = epoll_create1(EPOLL_CLOEXEC)) < 0)
        die("epoll_create1");

    int tfd = -1;
    long next = 0; /* the next request to start */
    int64_t begin = now_ns();
    if (open_loop) {
        dues = malloc(sizeof(int64_t) * (size_t)(requests + 1));
        double at = (double)begin;
        for (long k = 0; k < requests; k++) {
            at += -log(uniform()) / load * 1e9;
            dues[k] = (int64_t)at;
        }
        if ((tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC)) < 0)
            die("timerfd_create");
        struct epoll_event ev = {.events = EPOLLIN, .data.u64 = TIMER_TAG};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, tfd, &ev) < 0)
            die("epoll_ctl");
        if (requests)
            arm(tfd, dues[0]);
    }

    struct epoll_event events[256];
    while (answered + failed < requests) {
        refill(open_loop ? 0 : (long)load, &next);
        if (answered + failed == requests)
            break;
        int n = epoll_wait(ep, events, 256, -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die("epoll_wait");
        }
        for (int i = 0; i < n; i++) {
            if (events[i].data.u64 == TIMER_TAG) {
                uint64_t expiries;
                if (read(tfd, &expiries, sizeof expiries) < 0 && errno != EAGAIN)
                    die("read timerfd");
                int64_t now = now_ns();
                while (next < requests && dues[next] <= now) {
                    start(next, dues[next]);
                    next++;
                }
                if (next < requests)
                    arm(tfd, dues[next]);
                continue;
            }
            on_event(events[i].data.ptr, events[i].events);
            refill(open_loop ? 0 : (long)load, &next);
        }
    }
    double elapsed = (double)(now_ns() - begin) / 1e9;

    struct rusage me;
    getrusage(RUSAGE_SELF, &me);
    double cpu = (double)me.ru_utime.tv_sec + me.ru_utime.tv_usec / 1e6 + (double)me.ru_stime.tv_sec +
                 me.ru_stime.tv_usec / 1e6;
    for (long k = 0; k < answered; k++)
        printf("%lld %lld\n", (long long)latency[k], (long long)lateness[k]);
    printf("# cpu %.6f elapsed %.6f failed %ld\n", cpu, elapsed, failed);
    return 0;
}
