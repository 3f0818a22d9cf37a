/*
 * The guest side of bench/coldstart.mjs: runs an image's config the way a
 * sandbox agent would. `agent SPEC ROOT` reads SPEC (lines `uid=`, `gid=`,
 * `cwd=`, `arg=`, `env=`), chroots into ROOT, changes to the working
 * directory, drops to uid:gid and execs argv with exactly the config's
 * environment, looking argv[0] up in the image's PATH when it has no '/'.
 * Built with `gcc -static` by the benchmark.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX 256

static void die(const char *what, const char *arg) {
  printf("agent: %s %s: %s\n", what, arg, strerror(errno));
  fflush(stdout);
  exit(2);
}

static const char *path_of(char **envp) {
  for (; *envp; envp++)
    if (!strncmp(*envp, "PATH=", 5)) return *envp + 5;
  return NULL;
}

int main(int argc, char **argv) {
  if (argc != 3) {
    printf("usage: agent SPEC ROOT\n");
    return 2;
  }
  FILE *f = fopen(argv[1], "r");
  if (!f) die("open", argv[1]);
  char *args[MAX + 1], *envp[MAX + 1], *cwd = "/", line[8192];
  int nargs = 0, nenv = 0;
  long uid = -1, gid = -1;
  while (fgets(line, sizeof line, f)) {
    line[strcspn(line, "\n")] = 0;
    if (!strncmp(line, "uid=", 4)) uid = atol(line + 4);
    else if (!strncmp(line, "gid=", 4)) gid = atol(line + 4);
    else if (!strncmp(line, "cwd=", 4)) cwd = strdup(line + 4);
    else if (!strncmp(line, "arg=", 4) && nargs < MAX) args[nargs++] = strdup(line + 4);
    else if (!strncmp(line, "env=", 4) && nenv < MAX) envp[nenv++] = strdup(line + 4);
  }
  fclose(f);
  args[nargs] = envp[nenv] = NULL;
  if (nargs == 0) {
    printf("agent: %s: no argv\n", argv[1]);
    return 2;
  }
  if (chroot(argv[2]) < 0) die("chroot", argv[2]);
  if (chdir(cwd) < 0) die("chdir", cwd);
  if (setgroups(0, NULL) < 0) die("setgroups", "");
  if (gid >= 0 && setgid((gid_t)gid) < 0) die("setgid", "");
  if (uid >= 0 && setuid((uid_t)uid) < 0) die("setuid", "");
  fflush(stdout);
  const char *path = path_of(envp);
  if (strchr(args[0], '/') || !path) {
    execve(args[0], args, envp);
    die("execve", args[0]);
  }
  char *dirs = strdup(path);
  for (char *d = strtok(dirs, ":"); d; d = strtok(NULL, ":")) {
    char full[4096];
    snprintf(full, sizeof full, "%s/%s", d, args[0]);
    execve(full, args, envp);
  }
  die("execve (PATH)", args[0]);
}
