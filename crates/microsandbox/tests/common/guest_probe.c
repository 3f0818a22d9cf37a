/* The probe of crates/microsandbox/tests/boot.rs, linked statically so the
 * same binary runs on the host (over `umoci unpack` of an image), in the
 * guest's initramfs (over the overlay of the image's disk) and inside the
 * image itself (as its entrypoint). Three commands:
 *
 *   probe walk ROOT             one line per entry under ROOT, sorted: type,
 *                               mode, owner, mtime, size, links, device,
 *                               symlink target, every xattr, a hash of the
 *                               data (sampled ranges of files over 64 MiB),
 *                               and the first path of a hard link's inode
 *   probe agent SPEC ROOT       runs an image's config as an agent would:
 *                               chroot ROOT, chdir, drop to uid:gid (no
 *                               supplementary groups), exec argv with exactly
 *                               the config's env (SPEC: uid=, gid=, cwd=,
 *                               arg=, env= lines)
 *   probe whoami ARGS...        what a process was given: ids, groups, cwd,
 *                               argv, env (sorted)
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

static void die(const char *what, const char *path) {
  fprintf(stdout, "probe: %s %s: %s\n", what, path, strerror(errno));
  fflush(stdout);
  exit(2);
}

/* A 64-bit hash, a word at a time (fast enough under TCG). */
typedef struct {
  uint64_t h, n;
} hash_t;

static void hinit(hash_t *s) {
  s->h = 0x9E3779B97F4A7C15ull;
  s->n = 0;
}

static void hbytes(hash_t *s, const unsigned char *p, size_t len) {
  size_t i = 0;
  for (; i + 8 <= len; i += 8) {
    uint64_t w;
    memcpy(&w, p + i, 8);
    s->h = (s->h ^ w) * 0x100000001B3ull;
    s->h ^= s->h >> 29;
  }
  for (; i < len; i++) {
    s->h = (s->h ^ p[i]) * 0x100000001B3ull;
  }
  s->n += len;
}

static uint64_t hdone(hash_t *s) {
  uint64_t h = s->h ^ s->n;
  h ^= h >> 33;
  h *= 0xFF51AFD7ED558CCDull;
  h ^= h >> 33;
  return h;
}

static unsigned char buf[1 << 20];

/* Hashes [at, at+len) of fd into s; returns the bytes read. */
static uint64_t hrange(hash_t *s, int fd, uint64_t at, uint64_t len, const char *path) {
  uint64_t done = 0;
  while (done < len) {
    size_t want = len - done > sizeof buf ? sizeof buf : len - done;
    ssize_t n = pread(fd, buf, want, (off_t)(at + done));
    if (n < 0) die("read", path);
    if (n == 0) break;
    hbytes(s, buf, (size_t)n);
    done += (uint64_t)n;
  }
  return done;
}

/* The data's hash: all of it, or for files over 64 MiB 1 MiB windows at
 * the start, around 4 GiB, and at the end (each window named). */
static void data_hash(const char *path, uint64_t size, char *out, size_t outlen) {
  int fd = open(path, O_RDONLY | O_NOFOLLOW);
  if (fd < 0) die("open", path);
  if (size <= (64ull << 20)) {
    hash_t s;
    hinit(&s);
    uint64_t n = hrange(&s, fd, 0, size, path);
    snprintf(out, outlen, "data=%016llx/%llu", (unsigned long long)hdone(&s), (unsigned long long)n);
  } else {
    uint64_t w = 1ull << 20;
    uint64_t at[3] = {0, (4ull << 30) - w / 2, size - w};
    size_t off = (size_t)snprintf(out, outlen, "ranges=");
    for (int i = 0; i < 3; i++) {
      if (at[i] + w > size) at[i] = size - w;
      hash_t s;
      hinit(&s);
      uint64_t n = hrange(&s, fd, at[i], w, path);
      off += (size_t)snprintf(out + off, outlen - off, "%s%llu+%llu:%016llx", i ? "," : "",
                              (unsigned long long)at[i], (unsigned long long)n,
                              (unsigned long long)hdone(&s));
    }
  }
  close(fd);
}

static int cmp(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Hard links: (dev, ino) -> first path seen. */
struct seen {
  dev_t dev;
  ino_t ino;
  char *path;
};
static struct seen *links;
static size_t nlinks, caplinks;

static const char *first_path(const struct stat *st, const char *rel) {
  for (size_t i = 0; i < nlinks; i++)
    if (links[i].dev == st->st_dev && links[i].ino == st->st_ino) return links[i].path;
  if (nlinks == caplinks) {
    caplinks = caplinks ? caplinks * 2 : 64;
    links = realloc(links, caplinks * sizeof *links);
  }
  links[nlinks].dev = st->st_dev;
  links[nlinks].ino = st->st_ino;
  links[nlinks].path = strdup(rel);
  nlinks++;
  return NULL;
}

static void xattr_text(const char *path, char **out, size_t *len, size_t *cap) {
  char names[65536];
  ssize_t n = llistxattr(path, names, sizeof names);
  if (n < 0) {
    if (errno == ENOTSUP) return;
    die("llistxattr", path);
  }
  char *list[1024];
  int k = 0;
  for (ssize_t i = 0; i < n && k < 1024; i += (ssize_t)strlen(names + i) + 1) list[k++] = names + i;
  qsort(list, (size_t)k, sizeof *list, cmp);
  for (int i = 0; i < k; i++) {
    static unsigned char v[65536];
    ssize_t vn = lgetxattr(path, list[i], v, sizeof v);
    if (vn < 0) die("lgetxattr", path);
    size_t need = strlen(list[i]) + 2 * (size_t)vn + 16;
    if (*len + need >= *cap) {
      *cap = (*len + need) * 2;
      *out = realloc(*out, *cap);
    }
    *len += (size_t)sprintf(*out + *len, " xattr:%s=", list[i]);
    for (ssize_t j = 0; j < vn; j++) *len += (size_t)sprintf(*out + *len, "%02x", v[j]);
  }
}

static void walk(const char *root, const char *rel) {
  char path[8192];
  snprintf(path, sizeof path, "%s%s", root, rel);
  struct stat st;
  if (lstat(path, &st) < 0) die("lstat", path);
  size_t cap = 4096, len = 0;
  char *line = malloc(cap);
  int is_root = strcmp(rel, "") == 0;
  char type = S_ISDIR(st.st_mode)    ? 'd'
              : S_ISREG(st.st_mode)  ? 'f'
              : S_ISLNK(st.st_mode)  ? 'l'
              : S_ISCHR(st.st_mode)  ? 'c'
              : S_ISBLK(st.st_mode)  ? 'b'
              : S_ISFIFO(st.st_mode) ? 'p'
              : S_ISSOCK(st.st_mode) ? 's'
                                     : '?';
  /* The root's own attributes are the unpacker's (umoci's bundle, the
   * guest's overlay): only its xattrs are the image's. */
  if (is_root) {
    len = (size_t)sprintf(line, "/ d");
  } else {
    len = (size_t)sprintf(line, "%s %c mode=%04o uid=%u gid=%u mtime=%lld.%09ld", rel, type,
                          (unsigned)(st.st_mode & 07777), (unsigned)st.st_uid, (unsigned)st.st_gid,
                          (long long)st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
    if (type != 'd') len += (size_t)sprintf(line + len, " size=%llu nlink=%llu",
                                            (unsigned long long)st.st_size,
                                            (unsigned long long)st.st_nlink);
    if (type == 'c' || type == 'b')
      len += (size_t)sprintf(line + len, " rdev=%u:%u", major(st.st_rdev), minor(st.st_rdev));
  }
  if (type == 'l') {
    char target[4096];
    ssize_t n = readlink(path, target, sizeof target - 1);
    if (n < 0) die("readlink", path);
    target[n] = 0;
    if (len + (size_t)n + 16 >= cap) {
      cap = len + (size_t)n + 4096;
      line = realloc(line, cap);
    }
    len += (size_t)sprintf(line + len, " target=%s", target);
  }
  xattr_text(path, &line, &len, &cap);
  if (type == 'f') {
    const char *first = st.st_nlink > 1 ? first_path(&st, rel) : NULL;
    if (first) {
      if (len + strlen(first) + 16 >= cap) {
        cap = len + strlen(first) + 4096;
        line = realloc(line, cap);
      }
      len += (size_t)sprintf(line + len, " hardlink=%s", first);
    } else {
      char h[512];
      data_hash(path, (uint64_t)st.st_size, h, sizeof h);
      if (len + strlen(h) + 16 >= cap) {
        cap = len + strlen(h) + 4096;
        line = realloc(line, cap);
      }
      len += (size_t)sprintf(line + len, " %s", h);
    }
  }
  printf("%s\n", line);
  free(line);
  if (type != 'd') return;
  DIR *d = opendir(path);
  if (!d) die("opendir", path);
  char **names = NULL;
  size_t n = 0, c = 0;
  struct dirent *e;
  while ((e = readdir(d))) {
    if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
    if (n == c) {
      c = c ? c * 2 : 32;
      names = realloc(names, c * sizeof *names);
    }
    names[n++] = strdup(e->d_name);
  }
  closedir(d);
  qsort(names, n, sizeof *names, cmp);
  for (size_t i = 0; i < n; i++) {
    char sub[8192];
    snprintf(sub, sizeof sub, "%s/%s", rel, names[i]);
    walk(root, sub);
    free(names[i]);
  }
  free(names);
}

static int agent(const char *spec, const char *root) {
  FILE *f = fopen(spec, "r");
  if (!f) die("open", spec);
  char *argv[256], *envp[256];
  int argc = 0, envc = 0;
  long uid = -1, gid = -1;
  char cwd[4096] = "/";
  char line[4000];
  while (fgets(line, sizeof line, f)) {
    line[strcspn(line, "\n")] = 0;
    if (!strncmp(line, "uid=", 4)) uid = atol(line + 4);
    else if (!strncmp(line, "gid=", 4)) gid = atol(line + 4);
    else if (!strncmp(line, "cwd=", 4)) snprintf(cwd, sizeof cwd, "%s", line + 4);
    else if (!strncmp(line, "arg=", 4) && argc < 255) argv[argc++] = strdup(line + 4);
    else if (!strncmp(line, "env=", 4) && envc < 255) envp[envc++] = strdup(line + 4);
  }
  fclose(f);
  argv[argc] = NULL;
  envp[envc] = NULL;
  if (argc == 0) {
    printf("probe: %s: no argv\n", spec);
    return 2;
  }
  if (chroot(root) < 0) die("chroot", root);
  if (chdir(cwd) < 0) die("chdir", cwd);
  if (setgroups(0, NULL) < 0) die("setgroups", "");
  if (gid >= 0 && setgid((gid_t)gid) < 0) die("setgid", "");
  if (uid >= 0 && setuid((uid_t)uid) < 0) die("setuid", "");
  fflush(stdout);
  /* The program as the image's PATH finds it, as execvpe would. */
  const char *path = NULL;
  for (int i = 0; i < envc; i++)
    if (!strncmp(envp[i], "PATH=", 5)) path = envp[i] + 5;
  if (strchr(argv[0], '/') || !path) {
    execve(argv[0], argv, envp);
    die("execve", argv[0]);
  }
  char *dirs = strdup(path);
  for (char *dir = strtok(dirs, ":"); dir; dir = strtok(NULL, ":")) {
    char full[4096];
    snprintf(full, sizeof full, "%s/%s", dir, argv[0]);
    execve(full, argv, envp);
  }
  die("execve (PATH)", argv[0]);
  return 2;
}

static int whoami(int argc, char **argv, char **envp) {
  printf("uid=%u euid=%u gid=%u egid=%u\n", getuid(), geteuid(), getgid(), getegid());
  gid_t groups[256];
  int n = getgroups(256, groups);
  printf("groups=");
  for (int i = 0; i < n; i++) printf("%s%u", i ? "," : "", groups[i]);
  printf("\n");
  char cwd[4096];
  if (!getcwd(cwd, sizeof cwd)) die("getcwd", "");
  printf("cwd=%s\n", cwd);
  for (int i = 0; i < argc; i++) printf("argv[%d]=%s\n", i, argv[i]);
  int envc = 0;
  while (envp[envc]) envc++;
  qsort(envp, (size_t)envc, sizeof *envp, cmp);
  for (int i = 0; i < envc; i++) printf("env=%s\n", envp[i]);
  return 0;
}

int main(int argc, char **argv, char **envp) {
  if (argc == 3 && !strcmp(argv[1], "walk")) {
    walk(argv[2], "");
    return 0;
  }
  if (argc == 4 && !strcmp(argv[1], "agent")) return agent(argv[2], argv[3]);
  /* As an image's entrypoint, argv[0] is the image's name for it. */
  if (argc >= 2 && !strcmp(argv[1], "whoami")) return whoami(argc, argv, envp);
  fprintf(stderr, "usage: probe walk ROOT | agent SPEC ROOT | whoami ARGS...\n");
  return 2;
}
