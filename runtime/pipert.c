/* runtime/pipert.c: the `pipert` command line: runs a plan under mpirun
 * (or alone, as a world of one).
 *
 *   mpirun -np N pipert PLAN.bin [--steps N] [--seed N]
 *          [--data PATH] [--eval-data PATH]
 *          [--log-every N] [--progress auto|on|off] [--metrics FILE]
 *          [--tensorboard DIR]
 *          [--save DIR] [--save-every N] [--resume DIR]
 *          [--init PATH [--init-rename FROM=TO]... [--init-extra refuse|ignore]]
 *          [--export FILE]
 *          [--trace FILE] [--profile FILE] [--watchdog SEC] [--device cpu|cuda] [--verbose]
 *   pipert --help | -h | --version
 *
 * Options are read with getopt_long (`--opt VALUE` or `--opt=VALUE`, in any
 * order around the plan), and every number strictly: a value that is not a
 * whole number in range is one line naming the option, and exit 1.
 *
 * Every rank reads the plan and checks it (version, checksum, the
 * verifier), then the world: N must be a multiple of the stage count, or
 * exactly stages x data_parallel when the plan fixes it. Every rank comes to
 * the same conclusion, so a mismatch is one message and a non-zero exit
 * everywhere, never a hang. Checks that only some ranks can make (the data
 * files, which only the first and last stages open; the --save folder; the
 * --metrics and --trace files) are agreed on collectively (agree()): the lowest failing
 * rank's message, printed once by rank 0, and exit 1 on every rank through
 * MPI_Finalize. MPI_Abort is kept for failures inside the step loop, where a
 * rank cannot tell the others. Rank r runs stage r / dp as replica r % dp. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base_text.h"
#include "k_cpu.h"
#include "plan_file.h"
#include "plan_memory.h"
#include "rt.h"
#include "rt_dev.h"
#include "rt_optim.h"
#include "rt_ckpt.h"
#include "rt_safetensors.h"
#include "rt_tb.h"
#include "rt_trace.h"
#include "rt_profile.h"
#include "rt_weights.h"

/* OpenBLAS's own: one thread per rank, the ranks are the parallelism. */
void openblas_set_num_threads(int n);

#ifndef PIPE_VERSION
#define PIPE_VERSION "0.0.0"
#endif

#ifdef PIPE_HAVE_CUDA
#define PIPE_DEVICES "cpu, cuda"
#include <dlfcn.h>
#else
#define PIPE_DEVICES "cpu"
#endif

static void usage(FILE *out)
{
    fputs("usage: mpirun -np N pipert PLAN.bin [options]\n"
          "\n"
          "Trains the model of a plan written by pipec: every rank runs its stage's\n"
          "instruction stream. N is a multiple of the plan's stage count (data-parallel\n"
          "replicas), or exactly stages x data_parallel when the plan fixes it.\n"
          "\n"
          "  PLAN.bin          the plan, written by pipec -o\n"
          "\n"
          "training (each overrides the plan's train block):\n"
          "  --steps N         train N steps (0: none; evaluation still runs)\n"
          "  --seed N          seed for initialisation, shuffling and dropout\n"
          "\n"
          "data:\n"
          "  --data PATH       training data: the directory or file of the plan's source\n"
          "                    (idx: IMAGES,LABELS; npy: INPUTS,TARGETS)\n"
          "  --eval-data PATH  evaluation data, the same way (the plan needs eval_data)\n"
          "\n"
          "logging and metrics:\n"
          "  --log-every N     a log line every N steps (default: 10): loss, learning\n"
          "                    rate, gradient norm (before clipping), samples/s, ms/step\n"
          "  --progress MODE   auto (default): a live line (step, loss, samples/s, ETA) when\n"
          "                    the output is a terminal; on; off: plain log lines only\n"
          "  --metrics FILE    also write the log as JSON lines\n"
          "  --tensorboard DIR also write TensorBoard event files in DIR (created): loss,\n"
          "                    lr, grad_norm, samples/s every step; eval loss and accuracy\n"
          "\n"
          "checkpoints:\n"
          "  --save DIR        write a resumable checkpoint at the end: weights as\n"
          "                    safetensors (one file per stage, PyTorch's names and\n"
          "                    layouts), optimizer state, step; DIR/latest/ holds the\n"
          "                    newest (--steps 0 --save DIR: the initial weights); DIR is\n"
          "                    created (with its parents) and checked before the first step\n"
          "  --save-every N    also a checkpoint every N steps (needs --save)\n"
          "  --resume DIR      continue from the checkpoint in DIR (any stage count or\n"
          "                    schedule of the same model); --steps counts from the\n"
          "                    start of training\n"
          "\n"
          "weights in and out:\n"
          "  --init PATH       start from the weights in PATH, a .safetensors file or a\n"
          "                    folder of them, under the model's names (layers.{i}.NAME):\n"
          "                    every tensor of the model, its shape; F32, or F16/BF16\n"
          "                    converted exactly; any stage count. Optimizer state and\n"
          "                    step start fresh (--resume continues a run)\n"
          "  --init-rename FROM=TO  read a tensor named FROM... as TO... (a prefix; may be\n"
          "                    repeated, the first match applies): model.layers.=layers.\n"
          "  --init-extra MODE refuse (default): a tensor the model lacks is an error;\n"
          "                    ignore: skip it\n"
          "  --export FILE     after the last step, write the weights to one safetensors\n"
          "                    file that torch's load_state_dict(strict=True) takes (a tied\n"
          "                    weight under both names); --resume DIR --steps <its step>\n"
          "                    --export FILE converts a checkpoint without training\n"
          "\n"
          "tracing and hangs:\n"
          "  --trace FILE      write a Chrome trace (Perfetto) of the run: one row per rank,\n"
          "                    one box per instruction; prints each rank's measured idle\n"
          "                    fraction beside the plan's prediction\n"
          "  --profile FILE    measure every layer's forward and backward halves, the loss,\n"
          "                    data loading, the optimizer and the links to the neighbour\n"
          "                    stages while training (the first step is a warm-up), and\n"
          "                    write them as JSON for pipec's costs = profile(\"FILE\")\n"
          "  --watchdog SEC    a rank that waits SEC seconds for a transfer or reduction\n"
          "                    without progress ends the job, naming the instruction and\n"
          "                    the peer (default 300; 0: never)\n"
          "\n"
          "device:\n"
          "  --device DEV      the backend: cpu (default) or cuda (one GPU per rank: local\n"
          "                    rank modulo the node's GPUs; needs a pipert built with CUDA)\n"
          "\n"
          "other:\n"
          "  --verbose         each rank prints its pid, stage, replica and memory\n"
          "  --help, -h        this text\n"
          "  --version         pipert's version, plan format and devices\n"
          "\n"
          "A value follows its option (--steps 5) or joins it (--steps=5).\n"
          "\n"
          "SIGTERM or SIGINT to a rank: every rank finishes the current step, a checkpoint\n"
          "is written if --save was given, and pipert exits 0; a second signal exits at\n"
          "once. Open MPI's mpirun, signalled itself, sends the ranks SIGTERM one second\n"
          "later and SIGKILL one second after that, and exits 1 (docs/reliability.md).\n",
          out);
}

/* The options, in --help's order; val is what getopt_long returns. */
enum {
    O_STEPS = 256, O_SEED, O_DATA, O_EVAL_DATA, O_LOG_EVERY, O_PROGRESS, O_METRICS, O_TENSORBOARD, O_SAVE,
    O_SAVE_EVERY, O_RESUME, O_INIT, O_INIT_RENAME, O_INIT_EXTRA, O_EXPORT, O_TRACE, O_PROFILE, O_WATCHDOG, O_DEVICE, O_VERBOSE, O_VERSION, O_HELP = 'h'
};
static const struct option options[] = {
    {"steps", required_argument, NULL, O_STEPS},
    {"seed", required_argument, NULL, O_SEED},
    {"data", required_argument, NULL, O_DATA},
    {"eval-data", required_argument, NULL, O_EVAL_DATA},
    {"log-every", required_argument, NULL, O_LOG_EVERY},
    {"progress", required_argument, NULL, O_PROGRESS},
    {"metrics", required_argument, NULL, O_METRICS},
    {"tensorboard", required_argument, NULL, O_TENSORBOARD},
    {"save", required_argument, NULL, O_SAVE},
    {"save-every", required_argument, NULL, O_SAVE_EVERY},
    {"resume", required_argument, NULL, O_RESUME},
    {"init", required_argument, NULL, O_INIT},
    {"init-rename", required_argument, NULL, O_INIT_RENAME},
    {"init-extra", required_argument, NULL, O_INIT_EXTRA},
    {"export", required_argument, NULL, O_EXPORT},
    {"trace", required_argument, NULL, O_TRACE},
    {"profile", required_argument, NULL, O_PROFILE},
    {"watchdog", required_argument, NULL, O_WATCHDOG},
    {"device", required_argument, NULL, O_DEVICE},
    {"verbose", no_argument, NULL, O_VERBOSE},
    {"help", no_argument, NULL, O_HELP},
    {"version", no_argument, NULL, O_VERSION},
    {NULL, 0, NULL, 0},
};

static const char *option_name(int val)
{
    for (const struct option *o = options; o->name; o++)
        if (o->val == val)
            return o->name;
    return "?";
}

/* The command-line text of the option getopt_long has just returned:
 * argv[optind - 2] when its value came as the next argument, else
 * argv[optind - 1] ("--steps=5", "--verbose"). */
static const char *option_text(char **argv, const struct option *o)
{
    if (o->has_arg && optind >= 2 && optarg == argv[optind - 1])
        return argv[optind - 2];
    return argv[optind - 1];
}

/* getopt_long also takes an unambiguous prefix (--ste for --steps): refused,
 * so that a misspelt option is never taken for another one. */
static int spelt_out(const char *text, const char *name)
{
    size_t n = strcspn(text + 2, "=");
    return !strncmp(text, "--", 2) && n == strlen(name) && !strncmp(text + 2, name, n);
}

/* A whole number >= min (and at most max) for option opt, in decimal digits
 * only; else one line and -1. */
static int whole_number(const char *opt, const char *s, long long min, long long max, long long *out)
{
    size_t n = strspn(s, "0123456789");
    if (n == 0 || s[n]) {
        fprintf(stderr, "pipert: --%s: '%s' is not a whole number >= %lld\n", opt, s, min);
        return -1;
    }
    errno = 0;
    unsigned long long v = strtoull(s, NULL, 10);
    if (errno == ERANGE || v > (unsigned long long)max) {
        fprintf(stderr, "pipert: --%s: '%s' is more than %lld\n", opt, s, max);
        return -1;
    }
    if ((long long)v < min) {
        fprintf(stderr, "pipert: --%s: '%s' is not a whole number >= %lld\n", opt, s, min);
        return -1;
    }
    *out = (long long)v;
    return 0;
}

/* A number of seconds >= 0 (decimal, "1.5", "2e3"), else one line and -1. */
static int seconds(const char *opt, const char *s, double *out)
{
    char *end = NULL;
    double v = -1;
    errno = 0;
    if (s[0] && strspn(s, "0123456789.eE+-") == strlen(s) && ((s[0] >= '0' && s[0] <= '9') || s[0] == '.'))
        v = strtod(s, &end);
    if (!end || *end || errno == ERANGE || !(v >= 0) || !isfinite(v)) {
        fprintf(stderr, "pipert: --%s: '%s' is not a number of seconds >= 0\n", opt, s);
        return -1;
    }
    *out = v;
    return 0;
}

/* SIGTERM or SIGINT (a preempted job): the first asks for a clean stop
 * after the current step; a second one ends the process at once. The only
 * state a signal handler may touch. */
static volatile sig_atomic_t signals_seen;

static void on_signal(int sig)
{
    if (signals_seen++ > 0)
        _exit(128 + sig);
}

static void catch_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
}

/* Whether any rank has been asked to stop: every rank learns it at the same
 * step boundary, so all stop together. */
static int stop_requested(RtCtx *rt)
{
    double any = signals_seen > 0;
    rt->xp->allreduce_f64(rt, &any, 1, XPORT_WORLD);
    return any > 0;
}

/* Whether the user sees this output on a terminal. Under mpirun a rank's
 * stdout is always a pseudo-terminal of Open MPI's, so it is the launcher's
 * (our parent's) stdout that tells; a plain run asks its own. */
static int terminal_stdout(void)
{
    if (!isatty(STDOUT_FILENO))
        return 0;
    if (!getenv("OMPI_COMM_WORLD_SIZE") && !getenv("PMIX_RANK"))
        return 1;
    char link[64], target[256];
    snprintf(link, sizeof link, "/proc/%ld/fd/1", (long)getppid());
    ssize_t n = readlink(link, target, sizeof target - 1);
    if (n <= 0)
        return 0;
    target[n] = 0;
    return !strncmp(target, "/dev/pts/", 9) || !strncmp(target, "/dev/tty", 8);
}

static void duration(char *buf, size_t n, double secs)
{
    long long t = (long long)(secs + 0.5);
    if (t >= 3600)
        snprintf(buf, n, "%lld:%02lld:%02lld", t / 3600, t / 60 % 60, t % 60);
    else
        snprintf(buf, n, "%lld:%02lld", t / 60, t % 60);
}

/* 1 when every rank's CPU has what the bf16 GEMM needs (k_bf16_supported);
 * PIPE_NO_BF16=1 in a rank's environment makes it answer as a CPU without
 * (so the refusal is tested on machines that have it) */
static int all_have_bf16(RtCtx *rt)
{
    const char *no = getenv("PIPE_NO_BF16");
    int mine = k_bf16_supported() && !(no && !strcmp(no, "1")), all = 0;
    RT_MPI(rt, MPI_Allreduce(&mine, &all, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD));
    return all;
}

static int has_first(const RtCtx *rt)
{
    for (int c = 0; c < rt->chunks; c++)
        if (rt->chunk[c].is_first)
            return 1;
    return 0;
}

static int has_last(const RtCtx *rt)
{
    for (int c = 0; c < rt->chunks; c++)
        if (rt->chunk[c].is_last)
            return 1;
    return 0;
}

/* --trace FILE, written by rank 0 after the last step: whether it can be,
 * found out at start without changing anything (an existing file is opened
 * for writing but not cut; a new one is created and removed). "" or why not. */
static void check_output_file(const char *opt, const char *path, char *why, size_t n)
{
    why[0] = 0;
    int fd = open(path, O_WRONLY);
    if (fd >= 0) {
        close(fd);
        return;
    }
    if (errno == ENOENT && (fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0644)) >= 0) {
        close(fd);
        unlink(path);
        return;
    }
    snprintf(why, n, "%s %.600s: cannot write: %s", opt, path, strerror(errno));
}

/* Whether --data / --eval-data (opt) can replace the paths of the plan's
 * source d: "" or why not. */
static void check_data_option(const PlanData *d, const char *opt, const char *path, char *why, size_t n)
{
    const char *comma = strchr(path, ',');
    why[0] = 0;
    if (!d->set)
        snprintf(why, n, "--%s: the plan has no eval_data to replace; add eval_data = ... to its train block", opt);
    else if (d->kind == PLAN_DATA_SYNTHETIC)
        snprintf(why, n, "--%s: the plan's %s is synthetic (generated, no files to replace); compile it with idx(...), "
                 "cifar10(...), tokens(...) or npy(...) data", opt, !strcmp(opt, "data") ? "data" : "eval_data");
    else if (d->kind == PLAN_DATA_IDX && (!comma || comma == path || !comma[1] || strchr(comma + 1, ',')))
        snprintf(why, n, "--%s: idx data takes IMAGES,LABELS (two files, one comma), not '%.600s'", opt, path);
    else if (d->kind == PLAN_DATA_NPY && (!comma || comma == path || !comma[1] || strchr(comma + 1, ',')))
        snprintf(why, n, "--%s: npy data takes INPUTS,TARGETS (two .npy files, one comma), not '%.600s'", opt, path);
}

/* Replaces a data source's paths from the command line. */
static void override_path(BaseArena *a, PlanData *d, const char *path)
{
    const char *comma = strchr(path, ',');
    if ((d->kind == PLAN_DATA_IDX || d->kind == PLAN_DATA_NPY) && comma) {
        d->path = base_arena_strdup(a, path, (size_t)(comma - path));
        d->path2 = base_arena_strdup(a, comma + 1, strlen(comma + 1));
    } else {
        d->path = base_arena_strdup(a, path, strlen(path));
    }
    d->set = 1;
}

/* A start-up check that only some ranks can make, collective over the
 * world: msg holds this rank's error ("" for none) and is the same size on
 * every rank. Returns 0 when no rank failed; else -1 on every rank, with the
 * lowest failing rank's message in msg. Rank 0 prints it; every rank then
 * ends through done() (exit 1, MPI_Finalize): no abort banner, no rank left
 * waiting. */
static int agree(RtCtx *rt, char *msg, size_t size)
{
    int bad = msg[0] ? rt->rank : INT_MAX, first = INT_MAX;
    RT_MPI(rt, MPI_Allreduce(&bad, &first, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD));
    if (first == INT_MAX)
        return 0;
    RT_MPI(rt, MPI_Bcast(msg, (int)size, MPI_CHAR, first, MPI_COMM_WORLD));
    return -1;
}

/* --save DIR, before the first step, on every rank (each may write there):
 * creates DIR and its parents where missing, then proves it a directory this
 * rank can write in by creating and removing a file (as root, permission
 * bits say nothing; a read-only file system still refuses). "" or why not. */
static void check_save_dir(const RtCtx *rt, const char *dir, char *why, size_t n)
{
    char p[4096];
    why[0] = 0;
    if (!dir[0] || snprintf(p, sizeof p, "%s", dir) >= (int)sizeof p - 64) {
        snprintf(why, n, "--save %.600s...: the path is too long", dir);
        return;
    }
    /* each prefix in turn, as mkdir -p; another rank may create it first */
    for (char *q = p + 1;; q++) {
        if (*q != '/' && *q)
            continue;
        char c = *q;
        *q = 0;
        struct stat st;
        if (stat(p, &st) != 0 && (mkdir(p, 0755) != 0 && errno != EEXIST)) {
            snprintf(why, n, "--save %.600s: cannot create %.600s: %s", dir, p, strerror(errno));
            return;
        }
        if (stat(p, &st) != 0 || !S_ISDIR(st.st_mode)) {
            snprintf(why, n, "--save %.600s: %.600s is not a directory", dir, p);
            return;
        }
        *q = c;
        if (!c)
            break;
    }
    snprintf(p, sizeof p, "%s/.pipert-write-test-%d-%ld", dir, rt->rank, (long)getpid());
    int fd = open(p, O_WRONLY | O_CREAT | O_EXCL, 0600);
    if (fd < 0) {
        snprintf(why, n, "--save %.600s: cannot write in it: %s", dir, strerror(errno));
        return;
    }
    close(fd);
    unlink(p);
}

/* 1 / (the non-ignored targets of the global batch), as the loss is their
 * mean; every last-stage rank reads the global batch's targets to count. */
static void target_scale(RtCtx *rt, int32_t *tmp)
{
    const PlanModel *m = rt->m;
    int64_t e = plan_tensor_elems(&m->target[0].t);
    if (m->loss == PLAN_LOSS_MSE) {
        rt->target_scale = 1.0 / ((double)rt->global_batch * e);
        return;
    }
    int64_t count = 0;
    for (int64_t pos = 0; pos < rt->global_batch; pos++) {
        int64_t idx = rt_data_index(&rt->data, rt->c->shuffle, rt->step, pos, rt->global_batch);
        rt_data_target(&rt->data, idx, tmp);
        for (int64_t j = 0; j < e; j++)
            count += tmp[j] >= 0;
    }
    rt->target_scale = count ? 1.0 / (double)count : 0.0;
}

#ifdef PIPE_HAVE_CUDA
/* --device cuda, collective: loads pipert-cuda.so from pipert's own
 * directory (the CUDA backend and its libraries, mapped only for --device
 * cuda; $PIPERT_CUDA_MODULE names another) and opens this rank's GPU
 * (rt_cuda_open). Returns 0, or -1 on
 * every rank with the lowest failing rank's reason in err. */
static int open_cuda(RtCtx *rt, char *err, size_t errsize)
{
    char mine[4400] = "", exe[4096], path[4200];
    int (*open_fn)(RtCtx *, char *, size_t) = NULL;
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) {
        snprintf(mine, sizeof mine, "cannot find pipert's directory (/proc/self/exe: %s)", strerror(errno));
    } else {
        exe[n] = 0;
        char *slash = strrchr(exe, '/');
        if (slash)
            *slash = 0;
        /* PIPERT_CUDA_MODULE: another module (the tests' host stand-in) */
        const char *other = getenv("PIPERT_CUDA_MODULE");
        if (other && *other)
            snprintf(path, sizeof path, "%s", other);
        else
            snprintf(path, sizeof path, "%s/pipert-cuda.so", slash ? exe : ".");
        void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
        if (!h) {
            const char *why = dlerror();
            snprintf(mine, sizeof mine, "cannot load the CUDA backend: %s", why ? why : path);
        } else {
            /* POSIX's way to turn dlsym's object pointer into a function pointer */
            *(void **)(&open_fn) = dlsym(h, "rt_cuda_open");
            if (!open_fn)
                snprintf(mine, sizeof mine, "%s has no rt_cuda_open", path);
        }
    }
    /* every rank learns whether any failed, and the lowest such rank's reason */
    if (agree(rt, mine, sizeof mine) == 0)
        return open_fn(rt, err, errsize);
    snprintf(err, errsize, "%s", mine);
    return -1;
}
#endif

/* Sums a value over this stage's replicas (the loss of the global batch). */
static void sum_over_replicas(RtCtx *rt, double *v, int n)
{
    if (rt->dp > 1)
        rt->xp->allreduce_f64(rt, v, n, XPORT_REPLICAS);
}

/* --tensorboard DIR: the reporting rank's event file (rt_tb.h), closed by done() */
static RtTb *tboard;

static void evaluate(RtCtx *rt, int64_t at_step, int final)
{
    if (!rt->have_eval)
        return;
    double tot[3] = {0, 0, 0};
    int64_t nb = (rt->eval.n + rt->global_batch - 1) / rt->global_batch;
    for (int64_t b = 0; b < nb; b++) {
        rt->eval_step_base = b * rt->global_batch;
        rt->loss_sum = 0, rt->loss_count = 0, rt->correct = 0;
        rt->target_scale = 1;
        rt_run_program(rt, &rt->ir.sched.eval.prog[rt->stage], 1);
        tot[0] += rt->loss_sum, tot[1] += (double)rt->loss_count, tot[2] += (double)rt->correct;
    }
    if (!has_last(rt))
        return;
    sum_over_replicas(rt, tot, 3);
    if (rt->dpi != 0 || rt->tpi != 0)
        return;
    double loss = tot[1] > 0 ? tot[0] / tot[1] : 0, acc = tot[1] > 0 ? tot[2] / tot[1] : 0;
    int cls = rt->m->loss == PLAN_LOSS_CROSS_ENTROPY;
    if (cls)
        printf("eval step %lld: loss %.4f accuracy %.2f%% (%lld samples)\n", (long long)at_step, loss, 100 * acc,
               (long long)rt->eval.n);
    else
        printf("eval step %lld: loss %.4f (%lld samples)\n", (long long)at_step, loss, (long long)rt->eval.n);
    if (final && cls)
        printf("test accuracy: %.2f%%\n", 100 * acc);
    fflush(stdout);
    const char *tags[] = {"eval/loss", "eval/accuracy"};
    double vals[] = {loss, acc};
    rt_tb_scalars(tboard, at_step, tags, vals, cls ? 2 : 1);
    if (rt->metrics) {
        fprintf(rt->metrics, "{\"eval_step\": %lld, \"eval_loss\": %.9g", (long long)at_step, loss);
        if (cls)
            fprintf(rt->metrics, ", \"accuracy\": %.9g", acc);
        fprintf(rt->metrics, "}\n");
        fflush(rt->metrics);
    }
}

/* Before the first step, one --metrics record per rank: the training
 * memory it allocated (rt_mem_count's total: its arenas, not RSS), which
 * `pipec --stats --json` predicts as stages[s].memory_bytes. The rank that
 * writes the metrics (replica 0 of the last part's stage) gathers them;
 * collective over the world. */
static void memory_records(RtCtx *rt)
{
    int64_t mine[5] = {rt->rank, rt->stage, rt->dpi, rt_mem_total(rt), rt->tpi};
    int root = rt_rank_of(rt, rt->ir.part.part[rt->ir.part.nparts - 1].stage, 0, 0);
    int64_t *all = rt->rank == root ? rt_alloc(rt, (size_t)rt->world * sizeof mine, "memory records") : NULL;
    RT_MPI(rt, MPI_Gather(mine, 5, MPI_INT64_T, all, 5, MPI_INT64_T, root, MPI_COMM_WORLD));
    if (!all)
        return;
    for (int r = 0; r < rt->world; r++) {
        const int64_t *v = all + 5 * r;
        char tp[48] = "";
        if (rt->tp > 1) /* the tensor-parallel index, where there is one */
            snprintf(tp, sizeof tp, ", \"tp\": %lld", (long long)v[4]);
        fprintf(rt->metrics, "{\"rank\": %lld, \"stage\": %lld, \"replica\": %lld%s, \"memory_bytes\": %lld}\n",
                (long long)v[0], (long long)v[1], (long long)v[2], tp, (long long)v[3]);
    }
    fflush(rt->metrics);
    free(all);
}

/* What main has set up, so that every way out frees it (LeakSanitizer
 * checks every exit path in `make test-asan`). */
enum { HAVE_MPI = 1, HAVE_PLAN = 2, HAVE_SETUP = 4, HAVE_DATA = 8 };

static int done(RtCtx *rt, int rc, unsigned have)
{
    if (rt->metrics)
        fclose(rt->metrics);
    rt_tb_close(tboard);
    tboard = NULL;
    if (have & HAVE_DATA) {
        rt_data_close(&rt->data);
        rt_data_close(&rt->eval);
    }
    if (have & HAVE_SETUP)
        rt_teardown(rt);
    if (have & HAVE_PLAN) {
        plan_ir_free(&rt->ir);
    }
    free(rt);
    if (have & HAVE_MPI)
        MPI_Finalize();
    return rc;
}

int main(int argc, char **argv)
{
    const char *path = NULL, *data = NULL, *eval_data = NULL, *device = "cpu", *resume = NULL, *trace = NULL;
    const char *progress = "auto", *export = NULL, *tensorboard = NULL, *init_extra = NULL, *profile = NULL;
    const char *renames[64];
    RtInit init = {NULL, renames, 0, 0};
    long long steps = -1, seed = -1, save_every = 0;
    RtCtx *rt = calloc(1, sizeof *rt);
    if (!rt)
        return 2;
    rt->log_every = 10;
    rt->watchdog_s = 300;
    long long log_every = rt->log_every;
    opterr = 0; /* our messages, one line each */
    int c, at = -1;
    while ((c = getopt_long(argc, argv, ":h", options, &at)) != -1) {
        if (c == '?' && optopt >= O_STEPS) {
            fprintf(stderr, "pipert: --%s takes no value\n", option_name(optopt));
            return done(rt, 1, 0);
        }
        if (c == '?') {
            /* optopt: the short option; 0 for a long one, which getopt_long has passed */
            char shopt[3] = {'-', (char)optopt, 0};
            fprintf(stderr, "pipert: unknown option '%s' (pipert --help lists them)\n",
                    optopt ? shopt : argv[optind - 1]);
            return done(rt, 1, 0);
        }
        if (c == ':') {
            fprintf(stderr, "pipert: --%s needs a value\n", option_name(optopt));
            return done(rt, 1, 0);
        }
        const struct option *o = at >= 0 ? &options[at] : NULL;
        at = -1;
        if (o && !spelt_out(option_text(argv, o), o->name)) {
            fprintf(stderr, "pipert: unknown option '%s' (did you mean --%s?)\n", option_text(argv, o), o->name);
            return done(rt, 1, 0);
        }
        if (o && o->has_arg && !optarg[0]) {
            fprintf(stderr, "pipert: --%s needs a value\n", o->name);
            return done(rt, 1, 0);
        }
        /* --save --steps 5: the next option is not a value */
        if (o && o->has_arg && !strncmp(optarg, "--", 2) && optarg == argv[optind - 1]) {
            fprintf(stderr, "pipert: --%s needs a value, not the option '%s'\n", o->name, optarg);
            return done(rt, 1, 0);
        }
        int bad = 0;
        switch (c) {
        case O_HELP: usage(stdout); return done(rt, 0, 0);
        case O_VERSION:
            printf("pipert %s (plan format %d; devices: %s)\n", PIPE_VERSION, PLAN_VERSION, PIPE_DEVICES);
            return done(rt, 0, 0);
        case O_VERBOSE: rt->verbose = 1; break;
        /* the limits are the DSL's (compiler/pc_config.c) */
        case O_STEPS: bad = whole_number("steps", optarg, 0, (long long)1 << 40, &steps); break;
        case O_SEED: bad = whole_number("seed", optarg, 0, (long long)1 << 53, &seed); break;
        case O_SAVE_EVERY: bad = whole_number("save-every", optarg, 0, (long long)1 << 40, &save_every); break;
        case O_LOG_EVERY: bad = whole_number("log-every", optarg, 1, INT_MAX, &log_every); break;
        case O_WATCHDOG: bad = seconds("watchdog", optarg, &rt->watchdog_s); break;
        case O_DATA: data = optarg; break;
        case O_EVAL_DATA: eval_data = optarg; break;
        case O_METRICS: rt->metrics_path = optarg; break;
        case O_SAVE: rt->save_dir = optarg; break;
        case O_TRACE: trace = optarg; break;
        case O_PROFILE: profile = optarg; break;
        case O_PROGRESS: progress = optarg; break;
        case O_RESUME: resume = optarg; break;
        case O_INIT: init.path = optarg; break;
        case O_INIT_EXTRA: init_extra = optarg; break;
        case O_EXPORT: export = optarg; break;
        case O_TENSORBOARD: tensorboard = optarg; break;
        case O_INIT_RENAME:
            if (!strchr(optarg, '=') || optarg[0] == '=') {
                fprintf(stderr, "pipert: --init-rename: '%s' is not FROM=TO (a name prefix, '=', what replaces it)\n",
                        optarg);
                bad = 1;
            } else if (init.nrename == (int)(sizeof renames / sizeof renames[0])) {
                fprintf(stderr, "pipert: --init-rename: more than %d rules\n", (int)(sizeof renames / sizeof renames[0]));
                bad = 1;
            } else {
                renames[init.nrename++] = optarg;
            }
            break;
        case O_DEVICE: device = optarg; break;
        default: bad = 1; break;
        }
        if (bad)
            return done(rt, 1, 0);
    }
    rt->log_every = (int)log_every;
    for (int i = optind; i < argc; i++) {
        if (path) {
            fprintf(stderr, "pipert: more than one plan ('%s' and '%s')\n", path, argv[i]);
            return done(rt, 1, 0);
        }
        path = argv[i];
    }
    if (strcmp(device, "cpu") != 0 && strcmp(device, "cuda") != 0) {
        fprintf(stderr, "pipert: --device %s: unknown device (cpu or cuda)\n", device);
        return done(rt, 1, 0);
    }
#ifndef PIPE_HAVE_CUDA
    if (!strcmp(device, "cuda")) {
        fprintf(stderr, "pipert: --device cuda: this pipert was built without CUDA (PIPE_CUDA=OFF or no toolkit)\n");
        return done(rt, 1, 0);
    }
#endif
    if (strcmp(progress, "auto") && strcmp(progress, "on") && strcmp(progress, "off")) {
        fprintf(stderr, "pipert: --progress: '%s' is not auto, on or off\n", progress);
        return done(rt, 1, 0);
    }
    if (save_every > 0 && !rt->save_dir) {
        fprintf(stderr, "pipert: --save-every needs --save DIR\n");
        return done(rt, 1, 0);
    }
    if (init_extra && strcmp(init_extra, "refuse") && strcmp(init_extra, "ignore")) {
        fprintf(stderr, "pipert: --init-extra: '%s' is not refuse or ignore\n", init_extra);
        return done(rt, 1, 0);
    }
    init.ignore_extra = init_extra && !strcmp(init_extra, "ignore");
    if ((init.nrename || init_extra) && !init.path) {
        fprintf(stderr, "pipert: --%s needs --init PATH\n", init.nrename ? "init-rename" : "init-extra");
        return done(rt, 1, 0);
    }
    if (init.path && resume) {
        fprintf(stderr, "pipert: --init and --resume exclude each other: --resume continues a run (optimizer state "
                        "and step included), --init starts a new one from weights\n");
        return done(rt, 1, 0);
    }
    if (!path) {
        fprintf(stderr, "pipert: no plan given (usage: mpirun -np N pipert PLAN.bin [options]; pipert --help)\n");
        return done(rt, 1, 0);
    }
    openblas_set_num_threads(1);
    MPI_Init(&argc, &argv);
    unsigned have = HAVE_MPI;
    catch_signals();
    MPI_Comm_rank(MPI_COMM_WORLD, &rt->rank);
    MPI_Comm_size(MPI_COMM_WORLD, &rt->world);
    char err[1400];
    if (plan_read(path, &rt->ir, err, sizeof err) != 0) {
        if (rt->rank == 0)
            fprintf(stderr, "pipert: %s\n", err);
        return done(rt, 1, have);
    }
    have |= HAVE_PLAN;
    int S = rt->ir.part.stages;
    int64_t fixed = rt->ir.cfg.data_parallel, T = rt->ir.cfg.tensor_parallel;
    const char *bad = NULL;
    char why[320], per[96] = "";
    if (T > 1)
        snprintf(per, sizeof per, " x tensor_parallel %lld", (long long)T);
    if (rt->world % (S * T) != 0) {
        snprintf(why, sizeof why, "the world has %d rank%s, not a multiple of the plan's %d stage%s%s", rt->world,
                 rt->world == 1 ? "" : "s", S, S == 1 ? "" : "s", per);
        bad = why;
    } else if (fixed && rt->world != S * fixed * T) {
        snprintf(why, sizeof why, "the plan fixes data_parallel = %lld: the world must be %lld ranks (%d stages x %lld%s), not %d",
                 (long long)fixed, (long long)(S * fixed * T), S, (long long)fixed, per, rt->world);
        bad = why;
    } else if (T > 1 && profile) {
        bad = "--profile measures a plan with tensor_parallel = 1 (pipec divides a split block's measured time by "
              "tensor_parallel itself): profile the model without it";
    } else if (T > 1 && !strcmp(device, "cuda")) {
        bad = "tensor_parallel > 1 runs on the CPU backend only so far (--device cpu), not with --device cuda";
    } else if (rt->ir.cfg.zero && !strcmp(device, "cuda")) {
        bad = "zero = 1 runs on the CPU backend only so far (--device cpu), not with --device cuda";
    } else if (rt->ir.cfg.precision == PLAN_PREC_BF16 && strcmp(device, "cuda") != 0 && !all_have_bf16(rt)) {
        /* never fp32 in silence where bf16 was asked for */
        bad = "precision = bf16 on the CPU needs AVX512-BF16 (avx512_bf16 in /proc/cpuinfo) on every rank's CPU, "
              "and at least one lacks it (set precision = fp32, or train with --device cuda)";
    }
    if (bad) {
        if (rt->rank == 0)
            fprintf(stderr, "pipert: %s: %s\n", path, bad);
        return done(rt, 1, have);
    }
    /* --data / --eval-data: a source with files to replace (every rank reads the same plan) */
    if (data)
        check_data_option(&rt->ir.cfg.data, "data", data, err, sizeof err);
    if (eval_data && !(data && err[0]))
        check_data_option(&rt->ir.cfg.eval_data, "eval-data", eval_data, err, sizeof err);
    if ((data || eval_data) && err[0]) {
        if (rt->rank == 0)
            fprintf(stderr, "pipert: %s\n", err);
        return done(rt, 1, have);
    }
    /* --save DIR: usable on every rank, or the job ends now, not after training */
    if (rt->save_dir) {
        check_save_dir(rt, rt->save_dir, err, sizeof err);
        if (agree(rt, err, sizeof err) != 0) {
            if (rt->rank == 0)
                fprintf(stderr, "pipert: %s\n", err);
            return done(rt, 1, have);
        }
    }
    /* --export FILE: rank 0 writes it after the last step; known now */
    if (export) {
        if (rt->rank == 0)
            check_output_file("--export", export, err, sizeof err);
        else
            err[0] = 0;
        if (agree(rt, err, sizeof err) != 0) {
            if (rt->rank == 0)
                fprintf(stderr, "pipert: %s\n", err);
            return done(rt, 1, have);
        }
    }
    /* --trace FILE: rank 0 writes it after the last step; known now */
    if (trace) {
        if (rt->rank == 0)
            check_output_file("--trace", trace, err, sizeof err);
        else
            err[0] = 0;
        if (agree(rt, err, sizeof err) != 0) {
            if (rt->rank == 0)
                fprintf(stderr, "pipert: %s\n", err);
            return done(rt, 1, have);
        }
    }
    /* a checkpoint to resume from: every rank reads the manifest (the same
     * file, so the same verdict); its seed is the run's */
    RtManifest man;
    if (resume) {
        if (rt_ckpt_manifest_read(resume, &man, err, sizeof err) != 0) {
            if (rt->rank == 0)
                fprintf(stderr, "pipert: --resume %s: %s\n", resume, err);
            return done(rt, 1, have);
        }
        if (seed >= 0 && (uint64_t)seed != (uint64_t)man.seed) {
            if (rt->rank == 0)
                fprintf(stderr, "pipert: --resume %s: the checkpoint was trained with --seed %lld, not %lld\n", resume,
                        (long long)man.seed, seed);
            rt_ckpt_manifest_free(&man);
            return done(rt, 1, have);
        }
        seed = man.seed;
    }
    rt->tp = (int)rt->ir.cfg.tensor_parallel;
    rt->dp = rt->world / (S * rt->tp);
    rt->tpi = rt->rank % rt->tp;
    rt->dpi = rt_replica_of(rt, rt->rank);
    rt->stage = rt_stage_of(rt, rt->rank);
    PlanConfig *cfg = &rt->ir.cfg;
    if (steps >= 0)
        cfg->steps = steps;
    if (seed >= 0)
        cfg->seed = (uint64_t)seed;
    if (data)
        override_path(&rt->ir.arena, &cfg->data, data);
    if (eval_data)
        override_path(&rt->ir.arena, &cfg->eval_data, eval_data);
#ifdef PIPE_HAVE_CUDA
    /* collective: every rank gets its GPU, or every rank exits 1 */
    if (!strcmp(device, "cuda") && open_cuda(rt, err, sizeof err) != 0) {
        if (rt->rank == 0)
            fprintf(stderr, "pipert: --device cuda: %s\n", err);
        if (resume)
            rt_ckpt_manifest_free(&man);
        return done(rt, 1, have);
    }
#endif
    rt_setup(rt);
    have |= HAVE_SETUP;
    /* only the first and last stages open the data: collective, so that a bad
     * file is one message and exit 1 everywhere */
    char msg[sizeof err] = "";
    if (has_first(rt) || has_last(rt)) {
        if (rt_data_open(&rt->data, &cfg->data, rt->m, cfg->seed, 0, err, sizeof err) != 0)
            snprintf(msg, sizeof msg, "training data: %s", err);
        else if (cfg->eval_data.set &&
                 rt_data_open(&rt->eval, &cfg->eval_data, rt->m, cfg->seed, 1, err, sizeof err) != 0)
            snprintf(msg, sizeof msg, "evaluation data: %s", err);
        /* synthetic inputs drawn once, not in every step */
        else if (has_first(rt) && (rt_data_cache_inputs(&rt->data) < 0 || rt_data_cache_inputs(&rt->eval) < 0))
            snprintf(msg, sizeof msg, "synthetic data: out of memory for its samples");
    }
    have |= HAVE_DATA;
    if (agree(rt, msg, sizeof msg) != 0) {
        if (rt->rank == 0)
            fprintf(stderr, "pipert: %s\n", msg);
        if (resume)
            rt_ckpt_manifest_free(&man);
        return done(rt, 1, have);
    }
    rt->have_eval = cfg->eval_data.set;
    if (rt->have_eval) {
        /* every rank needs the evaluation size: the first and last stages know it */
        int64_t n = rt->eval.n;
        RT_MPI(rt, MPI_Allreduce(MPI_IN_PLACE, &n, 1, MPI_INT64_T, MPI_MAX, MPI_COMM_WORLD));
        rt->eval.n = n;
    }
    if (rt->verbose) {
        /* what this rank allocated, by part, beside pipec's prediction */
        PlanMemory want;
        int64_t part[6];
        plan_stage_memory(&rt->ir, rt->stage, &want);
        plan_memory_parts(&want, part);
        char parts[512], b[32], have[32], pred[32];
        size_t n = 0;
        for (int k = 0; k < RT_MEM_KINDS && n < sizeof parts; k++)
            n += snprintf(parts + n, sizeof parts - n, "%s %s %s", k ? "," : "", plan_memory_part_names[k],
                          base_bytes_text((double)rt->mem[k], b, sizeof b));
        char tp[64] = "";
        if (rt->tp > 1)
            snprintf(tp, sizeof tp, ", tensor-parallel %d of %d", rt->tpi, rt->tp);
        printf("[rank %d] pid %ld, stage %d of %d, replica %d of %d%s: %lld parameters; memory %s bytes (pipec "
               "predicted %s):%s\n",
               rt->rank, (long)getpid(), rt->stage, S, rt->dpi, rt->dp, tp, (long long)rt->nparams_total,
               base_commas(rt_mem_total(rt), have, sizeof have),
               base_commas(want.total - (rt->gpu ? want.cpu_packs : 0), pred, sizeof pred), parts);
        fflush(stdout);
    }
    if (resume) {
        rt_ckpt_resume(rt, &man);
        if (has_last(rt) && rt->dpi == 0 && rt->tpi == 0)
            printf("resumed from %s at step %lld of %lld\n", resume, (long long)rt->step, (long long)cfg->steps);
        rt_ckpt_manifest_free(&man);
    } else if (init.path) {
        /* collective: the lowest failing rank's message, before the first step */
        int loaded = 0, files = 0;
        if (rt_weights_init(rt, &init, &loaded, &files, err, sizeof err) != 0)
            snprintf(msg, sizeof msg, "%s", err);
        else
            msg[0] = 0;
        if (agree(rt, msg, sizeof msg) != 0) {
            if (rt->rank == 0)
                fprintf(stderr, "pipert: %s\n", msg);
            return done(rt, 1, have);
        }
        if (has_last(rt) && rt->dpi == 0 && rt->tpi == 0)
            printf("initialised %d tensors from %s (%d file%s); optimizer state starts fresh\n", loaded, init.path,
                   files, files == 1 ? "" : "s");
    }
    int reporter = has_last(rt) && rt->dpi == 0 && rt->tpi == 0;
    if (rt->metrics_path) {
        /* only the reporter opens it: collective, as the data */
        msg[0] = 0;
        if (reporter && !(rt->metrics = fopen(rt->metrics_path, resume ? "a" : "w")))
            snprintf(msg, sizeof msg, "--metrics %s: cannot write: %s", rt->metrics_path, strerror(errno));
        if (agree(rt, msg, sizeof msg) != 0) {
            if (rt->rank == 0)
                fprintf(stderr, "pipert: %s\n", msg);
            return done(rt, 1, have);
        }
    }
    if (rt->metrics_path)
        memory_records(rt);
    if (tensorboard) {
        /* only the reporter writes: collective, as the metrics */
        msg[0] = 0;
        if (reporter && !(tboard = rt_tb_open(tensorboard, msg, sizeof msg)) && !msg[0])
            snprintf(msg, sizeof msg, "--tensorboard %s: cannot write", tensorboard);
        if (agree(rt, msg, sizeof msg) != 0) {
            if (rt->rank == 0)
                fprintf(stderr, "pipert: %s\n", msg);
            return done(rt, 1, have);
        }
    }
    int32_t *tmp = rt_alloc(rt, (plan_tensor_elems(&rt->m->target[0].t) + 1) * sizeof(int32_t), "targets");
    int stopped = 0, interrupted = 0;
    int live = reporter && (!strcmp(progress, "on") || (!strcmp(progress, "auto") && terminal_stdout()));
    double last_live = 0;
    if (trace)
        rt_trace_open(rt, cfg->steps - rt->step);
    if (profile && cfg->steps - rt->step < 2) {
        if (rt->rank == 0)
            fprintf(stderr, "pipert: --profile needs at least 2 steps to run (the first is a warm-up), and %lld %s\n",
                    (long long)(cfg->steps - rt->step), cfg->steps - rt->step == 1 ? "is left" : "are left");
        free(tmp);
        return done(rt, 1, have);
    }
    if (profile)
        rt_profile_open(rt, cfg->steps - rt->step);
    /* everyone set up: the watchdog counts from here */
    RT_MPI(rt, MPI_Barrier(MPI_COMM_WORLD));
    double t_start = MPI_Wtime();
    int64_t first_step = rt->step;
    for (; rt->step < cfg->steps; rt->step++) {
        double t0 = MPI_Wtime();
        if (has_last(rt))
            target_scale(rt, tmp);
        rt->loss_sum = 0, rt->loss_count = 0, rt->correct = 0;
        rt_run_program(rt, &rt->ir.sched.train.prog[rt->stage], 0);
        double t1 = MPI_Wtime();
        rt_profile_step(rt, t1 - t0);
        if (rt->bad_stage >= 0) {
            /* every rank of the lane knows; replica 0 of the first stage says it */
            if (rt->stage == 0 && rt->dpi == 0 && rt->tpi == 0)
                fprintf(stderr, "pipert: step %lld: the loss or a gradient is not finite (NaN or Inf), first on stage "
                                "%d; stopping before the update%s\n",
                        (long long)rt->step + 1, rt->bad_stage, rt->save_dir ? ", no checkpoint written" : "");
            stopped = 1;
            break;
        }
        double loss[2] = {rt->loss_sum, (double)rt->loss_count};
        if (has_last(rt))
            sum_over_replicas(rt, loss, 2);
        int64_t s = rt->step + 1;
        if (live && !(s % rt->log_every == 0 || s == cfg->steps) && t1 - last_live > 0.1) {
            double per = (t1 - t_start) / (double)(s - first_step);
            char eta[32];
            duration(eta, sizeof eta, per * (double)(cfg->steps - s));
            printf("\r\033[Kstep %lld/%lld loss %.4f %.0f samples/s ETA %s", (long long)s, (long long)cfg->steps,
                   loss[1] > 0 ? loss[0] / loss[1] : 0, rt->global_batch / per, eta);
            fflush(stdout);
            last_live = t1;
        }
        if (tboard) {
            double dt = t1 - t0;
            const char *tags[] = {"train/loss", "train/lr", "train/grad_norm", "train/samples_per_s"};
            double vals[] = {loss[1] > 0 ? loss[0] / loss[1] : 0, rt_lr_at(cfg, rt->step), rt->grad_norm,
                             dt > 0 ? rt->global_batch / dt : 0};
            rt_tb_scalars(tboard, s, tags, vals, 4);
        }
        if (reporter && (s % rt->log_every == 0 || s == cfg->steps)) {
            if (live)
                printf("\r\033[K");
            double l = loss[1] > 0 ? loss[0] / loss[1] : 0, ms = (t1 - t0) * 1e3;
            double sps = rt->global_batch / (t1 - t0), lr = rt_lr_at(cfg, rt->step);
            printf("step %lld/%lld loss %.4f lr %.1e grad_norm %.3e %.0f samples/s %.1f ms/step\n", (long long)s,
                   (long long)cfg->steps, l, lr, rt->grad_norm, sps, ms);
            fflush(stdout);
            if (rt->metrics) {
                fprintf(rt->metrics, "{\"step\": %lld, \"loss\": %.9g, \"lr\": %.9g, \"grad_norm\": %.9g, "
                                     "\"samples_per_s\": %.9g, \"step_ms\": %.9g}\n",
                        (long long)s, l, lr, rt->grad_norm, sps, ms);
                fflush(rt->metrics);
            }
        }
        if (cfg->eval_every > 0 && s % cfg->eval_every == 0 && s < cfg->steps)
            evaluate(rt, s, 0);
        if (save_every > 0 && s % save_every == 0 && s < cfg->steps)
            rt_ckpt_save(rt, s);
        if (s < cfg->steps && stop_requested(rt)) {
            if (reporter)
                printf("pipert: stopped by a signal after step %lld of %lld%s%s\n", (long long)s,
                       (long long)cfg->steps, rt->save_dir ? "; checkpoint saved in " : "",
                       rt->save_dir ? rt->save_dir : "");
            rt->step++;
            interrupted = 1;
            break;
        }
    }
    double total = MPI_Wtime() - t_start;
    if (live) {
        printf("\r\033[K");
        fflush(stdout);
    }
    if (trace && !stopped)
        rt_trace_close(rt, trace);
    if (profile && !stopped) {
        /* collective; only rank 0 writes, and says why it could not */
        int failed = rt_profile_close(rt, profile, err, sizeof err) != 0;
        if (failed)
            fprintf(stderr, "pipert: --profile %s: %s\n", profile, err);
        RT_MPI(rt, MPI_Allreduce(MPI_IN_PLACE, &failed, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD));
        if (failed) {
            free(tmp);
            return done(rt, 1, have);
        }
        if (rt->rank == 0)
            printf("profile of %lld steps (the first a warm-up) written to %s\n", (long long)(cfg->steps - first_step),
                   profile);
    }
    if (stopped) {
        free(tmp);
        return done(rt, 1, have);
    }
    if (rt->save_dir)
        rt_ckpt_save(rt, rt->step);
    if (export && !interrupted) {
        int n = 0;
        if (rt_weights_export(rt, export, &n, err, sizeof err) != 0) {
            if (rt->rank == 0)
                fprintf(stderr, "pipert: --export %s: %s\n", export, err);
            free(tmp);
            return done(rt, 1, have);
        }
        if (reporter)
            printf("exported %d tensors to %s\n", n, export);
        fflush(stdout);
    }
    if (interrupted) {
        fflush(stdout);
        free(tmp);
        return done(rt, 0, have);
    }
    evaluate(rt, cfg->steps, 1);
    if (reporter) {
        char tp[48] = "";
        if (rt->tp > 1)
            snprintf(tp, sizeof tp, " x %d tensor-parallel", rt->tp);
        printf("trained %lld steps of %lld samples in %.1f s (%.0f samples/s) on %d rank%s: %d stage%s x %d replica%s%s\n",
               (long long)(cfg->steps - first_step), (long long)rt->global_batch, total,
               total > 0 ? (cfg->steps - first_step) * rt->global_batch / total : 0.0, rt->world, rt->world == 1 ? "" : "s", S,
               S == 1 ? "" : "s", rt->dp, rt->dp == 1 ? "" : "s", tp);
    }
    free(tmp);
    return done(rt, 0, have);
}
