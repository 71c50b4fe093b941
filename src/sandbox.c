/* The fakes are a Python program beside the sources; the child gets
 * PR_SET_PDEATHSIG so that even a kill -9 of ncghl does not leave them
 * holding the ports. */
#include "sandbox.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "config.h"

pid_t sandbox_start(const struct config *cfg, char *err, size_t errlen) {
  char script[1024], ncport[16], ghlport[16];
  snprintf(script, sizeof script, "%s/tests/fakes/fake_upstreams.py", NCGHL_SOURCE_DIR);
  if (access(script, R_OK) != 0) {
    snprintf(err, errlen, "sandbox: the fakes are missing (%s)", script);
    return -1;
  }
  snprintf(ncport, sizeof ncport, "%d", cfg->sandbox_nowcerts_port);
  snprintf(ghlport, sizeof ghlport, "%d", cfg->sandbox_ghl_port);
  int fds[2];
  if (pipe(fds) != 0) {
    snprintf(err, errlen, "sandbox: pipe: %s", strerror(errno));
    return -1;
  }
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0) {
    snprintf(err, errlen, "sandbox: fork: %s", strerror(errno));
    close(fds[0]);
    close(fds[1]);
    return -1;
  }
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent)
      _exit(1);
    dup2(fds[1], STDOUT_FILENO);
    close(fds[0]);
    close(fds[1]);
    execlp("python3", "python3", script, "--nowcerts-port", ncport, "--ghl-port", ghlport,
           "--nowcerts-user", cfg->nowcerts_username, "--nowcerts-pass", cfg->nowcerts_password,
           "--ghl-token", cfg->ghl_api_key, "--quiet", (char *)NULL);
    _exit(127);
  }
  close(fds[1]);
  /* Wait (before the loop starts) for "READY nowcerts=N ghl=M". */
  char line[256];
  size_t got = 0;
  struct pollfd pfd = {fds[0], POLLIN, 0};
  while (got < sizeof line - 1 && !memchr(line, '\n', got)) {
    int r = poll(&pfd, 1, 15000);
    if (r <= 0)
      break;
    ssize_t n = read(fds[0], line + got, sizeof line - 1 - got);
    if (n <= 0)
      break;
    got += (size_t)n;
  }
  line[got] = 0;
  close(fds[0]);
  if (strncmp(line, "READY", 5) != 0) {
    snprintf(err, errlen,
             "sandbox: the fakes did not start (ports %d and %d busy? set SANDBOX_NOWCERTS_PORT "
             "and SANDBOX_GHL_PORT)",
             cfg->sandbox_nowcerts_port, cfg->sandbox_ghl_port);
    sandbox_stop(pid);
    return -1;
  }
  return pid;
}

void sandbox_stop(pid_t pid) {
  if (pid <= 0)
    return;
  kill(pid, SIGTERM);
  for (int i = 0; i < 50; i++) {
    if (waitpid(pid, NULL, WNOHANG) == pid)
      return;
    usleep(20000);
  }
  kill(pid, SIGKILL);
  waitpid(pid, NULL, 0);
}
