// The least any HTTP/1.1 server can do per request on this machine, as a yardstick for
// `make bench-server`: one epoll loop per thread on its own SO_REUSEPORT listener, and per
// request one recv and one send of a response rendered once at start (serve's own bytes, read
// from a file). No parsing beyond finding the end of the head, no timeouts, no limits, no
// metrics: not a server to deploy, only the floor of what a request costs in the kernel.
// With `sendfile`, the head goes out with one send (MSG_MORE) and the body with one sendfile from
// the response file, as nginx sends a static file: fewer bytes copied for a large body, one more
// system call.
//
//   min-server PORT RESPONSE_FILE THREADS [sendfile]
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <unistd.h>

static char *response;
static size_t response_len;
static int port;
// With sendfile: the response file, and where its body starts.
static int response_fd = -1;
static size_t head_len;

static void respond(int fd) {
  if (response_fd < 0) {
    send(fd, response, response_len, MSG_NOSIGNAL);
    return;
  }
  send(fd, response, head_len, MSG_NOSIGNAL | MSG_MORE);
  off_t offset = (off_t)head_len;
  sendfile(fd, response_fd, &offset, response_len - head_len);
}

static void *serve_loop(void *unused) {
  (void)unused;
  int one = 1;
  int listener = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  struct sockaddr_in address = {.sin_family = AF_INET,
                                .sin_port = htons(port),
                                .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  setsockopt(listener, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
  if (bind(listener, (struct sockaddr *)&address, sizeof address) || listen(listener, 4096)) {
    perror("min-server: listen");
    exit(1);
  }
  int poll = epoll_create1(0);
  struct epoll_event event = {.events = EPOLLIN, .data.fd = listener}, ready[256];
  epoll_ctl(poll, EPOLL_CTL_ADD, listener, &event);
  char request[8192];
  for (;;) {
    int count = epoll_wait(poll, ready, 256, -1);
    for (int i = 0; i < count; i++) {
      int fd = ready[i].data.fd;
      if (fd == listener) {
        int client;
        while ((client = accept4(listener, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
          setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
          struct epoll_event readable = {.events = EPOLLIN, .data.fd = client};
          epoll_ctl(poll, EPOLL_CTL_ADD, client, &readable);
        }
        continue;
      }
      ssize_t got = recv(fd, request, sizeof request, 0);
      if (got <= 0) {
        close(fd);
      } else if (memmem(request, (size_t)got, "\r\n\r\n", 4)) {
        respond(fd);
      }
    }
  }
  return NULL;
}

int main(int argc, char **argv) {
  if (argc != 4 && !(argc == 5 && strcmp(argv[4], "sendfile") == 0)) {
    fprintf(stderr, "usage: min-server PORT RESPONSE_FILE THREADS [sendfile]\n");
    return 2;
  }
  port = atoi(argv[1]);
  int threads = atoi(argv[3]);
  FILE *file = fopen(argv[2], "rb");
  if (!file || fseek(file, 0, SEEK_END)) {
    perror("min-server: response file");
    return 1;
  }
  response_len = (size_t)ftell(file);
  rewind(file);
  response = malloc(response_len);
  if (!response || fread(response, 1, response_len, file) != response_len || threads < 1) {
    fprintf(stderr, "min-server: cannot read the response, or no threads\n");
    return 1;
  }
  if (argc == 5) {
    char *end = memmem(response, response_len, "\r\n\r\n", 4);
    response_fd = fileno(file);
    if (!end) {
      fprintf(stderr, "min-server: the response has no head\n");
      return 1;
    }
    head_len = (size_t)(end - response) + 4;
  }
  pthread_t thread;
  for (int i = 1; i < threads; i++) pthread_create(&thread, NULL, serve_loop, NULL);
  serve_loop(NULL);
}
