/*
** fuzz/fuzz_main.c — a built-in mutation loop for fuzz/codec_fuzz.c where
** libFuzzer is not available (gcc): starts from the files of the given
** directories (valid encodings), applies random bit flips, byte changes,
** truncations, insertions, deletions and splices, and calls
** LLVMFuzzerTestOneInput until the time is up. Under ASan a crash saves the
** input that caused it as <save-dir>/crash-<n> before the process dies.
**
** usage: codec_fuzz_loop SECONDS SAVE-DIR SEED-DIR...
**
** Threads: one.
** Ownership: the seeds and the current input are malloc'd for the run.
*/
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#if defined(__has_include)
#if __has_include(<sanitizer/common_interface_defs.h>)
#include <sanitizer/common_interface_defs.h>
#define HAVE_DEATH_CALLBACK 1
#endif
#endif

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct blob { unsigned char *p; size_t n; } blob;

static blob *seeds;
static size_t nseeds, capseeds;
static unsigned char *cur;          /* the input being run */
static size_t curlen;
static const char *savedir;
static uint64_t rng = 0x9E3779B97F4A7C15ull;

static uint64_t rnd(void) {         /* xorshift64* */
  rng ^= rng >> 12; rng ^= rng << 25; rng ^= rng >> 27;
  return rng * 0x2545F4914F6CDD1Dull;
}
static size_t below(size_t n) { return n ? (size_t)(rnd() % n) : 0; }

static void save_input(const char *prefix) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%s-%lu", savedir, prefix, (unsigned long)time(NULL));
  FILE *f = fopen(path, "wb");
  if (f == NULL) return;
  fwrite(cur, 1, curlen, f);
  fclose(f);
  fprintf(stderr, "fuzz: input saved as %s\n", path);
}

#ifdef HAVE_DEATH_CALLBACK
static void on_death(void) { save_input("crash"); }
#endif

static void add_seed(const unsigned char *p, size_t n) {
  if (nseeds == capseeds) {
    capseeds = capseeds ? capseeds * 2 : 64;
    seeds = realloc(seeds, capseeds * sizeof *seeds);
    if (seeds == NULL) abort();
  }
  seeds[nseeds].p = malloc(n ? n : 1);
  if (seeds[nseeds].p == NULL) abort();
  memcpy(seeds[nseeds].p, p, n);
  seeds[nseeds].n = n;
  nseeds++;
}

static void load_dir(const char *dir) {
  DIR *d = opendir(dir);
  if (d == NULL) return;
  struct dirent *de;
  while ((de = readdir(d)) != NULL) {
    if (de->d_name[0] == '.') continue;
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
    FILE *f = fopen(path, "rb");
    if (f == NULL) continue;
    unsigned char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    add_seed(buf, n);
  }
  closedir(d);
}

#define INPUT_MAX (1 << 16)

/* One random edit of cur[0 .. curlen), which has room for INPUT_MAX. */
static void mutate(void) {
  static const unsigned char interesting[] = { 0, 1, 0x7f, 0x80, 0xff, 0xfe, 8, 9, 10, 17, 18, 27 };
  size_t i = below(curlen ? curlen : 1);
  switch (below(9)) {
    case 0:   /* flip a bit */
      if (curlen) cur[i] ^= (unsigned char)(1u << below(8));
      break;
    case 1:   /* a random byte */
      if (curlen) cur[i] = (unsigned char)rnd();
      break;
    case 2:   /* an interesting byte (tags, extremes) */
      if (curlen) cur[i] = interesting[below(sizeof interesting)];
      break;
    case 3:   /* truncate */
      curlen = below(curlen + 1);
      break;
    case 4: { /* delete a range */
      size_t n = below(curlen - i + 1);
      memmove(cur + i, cur + i + n, curlen - i - n);
      curlen -= n;
      break;
    }
    case 5: { /* insert random bytes */
      size_t n = 1 + below(8);
      if (curlen + n > INPUT_MAX) break;
      memmove(cur + i + n, cur + i, curlen - i);
      for (size_t k = 0; k < n; k++) cur[i + k] = (unsigned char)rnd();
      curlen += n;
      break;
    }
    case 6: { /* duplicate a range */
      size_t n = below(curlen - i + 1);
      if (curlen + n > INPUT_MAX) break;
      memmove(cur + i + n, cur + i, curlen - i);
      curlen += n;
      break;
    }
    case 7: { /* splice in a piece of another seed */
      const blob *s = &seeds[below(nseeds)];
      size_t from = below(s->n + 1), n = below(s->n - from + 1);
      if (i + n > INPUT_MAX) break;
      memcpy(cur + i, s->p + from, n);
      if (i + n > curlen) curlen = i + n;
      break;
    }
    default:  /* a 32-bit little-endian count or length, often extreme */
      if (curlen >= 4 && i + 4 <= curlen) {
        uint32_t v = below(2) ? (uint32_t)rnd() : (uint32_t)below(300);
        memcpy(cur + i, &v, 4);
      }
      break;
  }
}

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: %s SECONDS SAVE-DIR SEED-DIR...\n", argv[0]);
    return 2;
  }
  double seconds = atof(argv[1]);
  savedir = argv[2];
  for (int i = 3; i < argc; i++) load_dir(argv[i]);
  if (nseeds == 0) {
    fprintf(stderr, "fuzz: no seeds\n");
    return 2;
  }
  rng ^= (uint64_t)time(NULL) * 0x9E3779B97F4A7C15ull;
  fprintf(stderr, "fuzz: %zu seeds, %.0f s, seed %llu\n", nseeds, seconds,
          (unsigned long long)rng);
#ifdef HAVE_DEATH_CALLBACK
  __sanitizer_set_death_callback(on_death);
#endif
  cur = malloc(INPUT_MAX);
  if (cur == NULL) abort();
  unsigned long execs = 0;
  double end = now() + seconds;
  /* every seed once as it is, then mutants */
  for (size_t s = 0; s < nseeds; s++) {
    curlen = seeds[s].n;
    memcpy(cur, seeds[s].p, curlen);
    LLVMFuzzerTestOneInput(cur, curlen);
    execs++;
  }
  while (now() < end) {
    for (int k = 0; k < 256; k++) {
      const blob *s = &seeds[below(nseeds)];
      curlen = s->n;
      memcpy(cur, s->p, curlen);
      int edits = 1 + (int)below(4);
      for (int e = 0; e < edits; e++) mutate();
      LLVMFuzzerTestOneInput(cur, curlen);
      execs++;
    }
  }
  fprintf(stderr, "fuzz: %lu executions, no crash\n", execs);
  printf("fuzz executions: %lu\n", execs);
  free(cur);
  return 0;
}
