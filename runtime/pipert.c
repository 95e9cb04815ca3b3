/* runtime/pipert.c: the `pipert` command line: runs a plan under mpirun
 * (or alone, as a world of one).
 *
 *   mpirun -np N pipert PLAN.bin [--steps N] [--seed N] [--data PATH]
 *          [--eval-data PATH] [--log-every N] [--metrics FILE] [--verbose]
 *          [--device cpu|cuda]
 *
 * Every rank reads the plan and checks it (version, checksum, the
 * verifier), then the world: N must be a multiple of the stage count, or
 * exactly stages x data_parallel when the plan fixes it. Every rank comes to
 * the same conclusion, so a mismatch is one message and a non-zero exit
 * everywhere, never a hang. Rank r runs stage r / dp as replica r % dp. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include "planfile.h"
#include "rt.h"
#include "rt_dev.h"
#include "rt_optim.h"
#include "rt_ckpt.h"
#include "rt_safetensors.h"
#include "rt_trace.h"

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
          "options (each overrides the plan's train settings):\n"
          "  --steps N         train N steps (0: none; evaluation still runs)\n"
          "  --seed N          seed for initialisation, shuffling and dropout\n"
          "  --data PATH       training data: the directory or file of the plan's source\n"
          "                    (idx: IMAGES,LABELS)\n"
          "  --eval-data PATH  evaluation data, the same way\n"
          "  --log-every N     a log line every N steps (default: 10)\n"
          "  --metrics FILE    also write the log as JSON lines\n"
          "  --save DIR        write a resumable checkpoint at the end: weights as\n"
          "                    safetensors (one file per stage, PyTorch's names and\n"
          "                    layouts), optimizer state, step; DIR/latest/ holds the\n"
          "                    newest (--steps 0 --save DIR: the initial weights)\n"
          "  --save-every N    also a checkpoint every N steps (needs --save)\n"
          "  --resume DIR      continue from the checkpoint in DIR (any stage count or\n"
          "                    schedule of the same model); --steps counts from the\n"
          "                    start of training\n"
          "  --trace FILE      write a Chrome trace (Perfetto) of the run: one row per rank,\n"
          "                    one box per instruction; prints each rank's measured idle\n"
          "                    fraction beside the plan's prediction\n"
          "  --watchdog SEC    a rank that waits SEC seconds for a transfer or reduction\n"
          "                    without progress ends the job, naming the instruction and\n"
          "                    the peer (default 300; 0: never)\n"
          "  --progress MODE   auto (default): a live line (step, loss, samples/s, ETA) when\n"
          "                    the output is a terminal; on; off: plain log lines only\n"
          "  --device DEV      the backend: cpu (default) or cuda (one GPU per rank: local\n"
          "                    rank modulo the node's GPUs; needs a pipert built with CUDA)\n"
          "  --verbose         each rank prints its pid, stage, replica and memory\n"
          "\n"
          "SIGTERM or SIGINT: every rank finishes the current step, a checkpoint is\n"
          "written if --save was given, and pipert exits 0; a second signal exits at once.\n"
          "  --help, --version\n",
          out);
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

static double ws_mib(const RtCtx *rt)
{
    double b = 0;
    for (int c = 0; c < rt->chunks; c++)
        b += (double)rt->chunk[c].ws_bytes;
    return b / (1 << 20);
}

static double slot_mib(const RtCtx *rt)
{
    double b = 0;
    for (int c = 0; c < rt->chunks; c++)
        b += (double)rt->chunk[c].nbuf * rt->chunk[c].slot_bytes;
    return b / (1 << 20);
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

/* Replaces a data source's paths from the command line. */
static void override_path(AstArena *a, PcData *d, const char *path)
{
    const char *comma = strchr(path, ',');
    if (d->kind == PC_DATA_IDX && comma) {
        d->path = ast_strdup(a, path, (size_t)(comma - path));
        d->path2 = ast_strdup(a, comma + 1, strlen(comma + 1));
    } else {
        d->path = ast_strdup(a, path, strlen(path));
    }
    d->set = 1;
}

/* 1 / (the non-ignored targets of the global batch), as the loss is their
 * mean; every last-stage rank reads the global batch's targets to count. */
static void target_scale(RtCtx *rt, int32_t *tmp)
{
    const PcModel *m = rt->m;
    int64_t e = pc_tensor_elems(&m->target[0].t);
    if (m->loss == PC_LOSS_MSE) {
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
    int bad = mine[0] ? rt->rank : INT_MAX, first = INT_MAX;
    RT_MPI(rt, MPI_Allreduce(&bad, &first, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD));
    if (first == INT_MAX)
        return open_fn(rt, err, errsize);
    RT_MPI(rt, MPI_Bcast(mine, (int)sizeof mine, MPI_CHAR, first, MPI_COMM_WORLD));
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
        rt_run_program(rt, &rt->p.eval.prog[rt->stage], 1);
        tot[0] += rt->loss_sum, tot[1] += (double)rt->loss_count, tot[2] += (double)rt->correct;
    }
    if (!has_last(rt))
        return;
    sum_over_replicas(rt, tot, 3);
    if (rt->dpi != 0)
        return;
    double loss = tot[1] > 0 ? tot[0] / tot[1] : 0, acc = tot[1] > 0 ? tot[2] / tot[1] : 0;
    int cls = rt->m->loss == PC_LOSS_CROSS_ENTROPY;
    if (cls)
        printf("eval step %lld: loss %.4f accuracy %.2f%% (%lld samples)\n", (long long)at_step, loss, 100 * acc,
               (long long)rt->eval.n);
    else
        printf("eval step %lld: loss %.4f (%lld samples)\n", (long long)at_step, loss, (long long)rt->eval.n);
    if (final && cls)
        printf("test accuracy: %.2f%%\n", 100 * acc);
    fflush(stdout);
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
    int64_t mine[4] = {rt->rank, rt->stage, rt->dpi, rt_mem_total(rt)};
    int root = rt->f.part.part[rt->f.part.nparts - 1].stage * rt->dp;
    int64_t *all = rt->rank == root ? rt_alloc(rt, (size_t)rt->world * sizeof mine, "memory records") : NULL;
    RT_MPI(rt, MPI_Gather(mine, 4, MPI_INT64_T, all, 4, MPI_INT64_T, root, MPI_COMM_WORLD));
    if (!all)
        return;
    for (int r = 0; r < rt->world; r++)
        fprintf(rt->metrics, "{\"rank\": %lld, \"stage\": %lld, \"replica\": %lld, \"memory_bytes\": %lld}\n",
                (long long)all[4 * r], (long long)all[4 * r + 1], (long long)all[4 * r + 2], (long long)all[4 * r + 3]);
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
    if (have & HAVE_DATA) {
        rt_data_close(&rt->data);
        rt_data_close(&rt->eval);
    }
    if (have & HAVE_SETUP)
        rt_teardown(rt);
    if (have & HAVE_PLAN) {
        pc_plan_free(&rt->p);
        pc_front_free(&rt->f);
    }
    free(rt);
    if (have & HAVE_MPI)
        MPI_Finalize();
    return rc;
}

int main(int argc, char **argv)
{
    const char *path = NULL, *data = NULL, *eval_data = NULL, *device = "cpu", *resume = NULL, *trace = NULL;
    const char *progress = "auto";
    long long steps = -1, seed = -1, save_every = 0;
    RtCtx *rt = calloc(1, sizeof *rt);
    if (!rt)
        return 2;
    rt->log_every = 10;
    rt->watchdog_s = 300;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return done(rt, 0, 0);
        } else if (!strcmp(a, "--version")) {
            printf("pipert %s (plan format %d; devices: %s)\n", PIPE_VERSION, PLAN_VERSION, PIPE_DEVICES);
            return done(rt, 0, 0);
        } else if (!strcmp(a, "--verbose")) {
            rt->verbose = 1;
        } else if (a[0] == '-' && a[1] == '-' && !v) {
            fprintf(stderr, "pipert: %s needs a value\n", a);
            return done(rt, 1, 0);
        } else if (!strcmp(a, "--steps")) {
            steps = atoll(argv[++i]);
        } else if (!strcmp(a, "--seed")) {
            seed = atoll(argv[++i]);
        } else if (!strcmp(a, "--data")) {
            data = argv[++i];
        } else if (!strcmp(a, "--eval-data")) {
            eval_data = argv[++i];
        } else if (!strcmp(a, "--log-every")) {
            rt->log_every = atoi(argv[++i]);
        } else if (!strcmp(a, "--metrics")) {
            rt->metrics_path = argv[++i];
        } else if (!strcmp(a, "--save")) {
            rt->save_dir = argv[++i];
        } else if (!strcmp(a, "--save-every")) {
            save_every = atoll(argv[++i]);
        } else if (!strcmp(a, "--trace")) {
            trace = argv[++i];
        } else if (!strcmp(a, "--watchdog")) {
            rt->watchdog_s = atof(argv[++i]);
        } else if (!strcmp(a, "--progress")) {
            progress = argv[++i];
        } else if (!strcmp(a, "--resume")) {
            resume = argv[++i];
        } else if (!strcmp(a, "--device")) {
            device = argv[++i];
        } else if (a[0] == '-') {
            fprintf(stderr, "pipert: unknown option '%s'\n", a);
            usage(stderr);
            return done(rt, 1, 0);
        } else if (path) {
            fprintf(stderr, "pipert: more than one plan ('%s' and '%s')\n", path, a);
            return done(rt, 1, 0);
        } else {
            path = a;
        }
    }
    if (!path) {
        usage(stderr);
        return done(rt, 1, 0);
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
    if (steps < -1 || rt->log_every < 1 || save_every < 0) {
        fprintf(stderr, "pipert: --steps and --save-every must be >= 0 and --log-every >= 1\n");
        return done(rt, 1, 0);
    }
    if (!(rt->watchdog_s >= 0) || (strcmp(progress, "auto") && strcmp(progress, "on") && strcmp(progress, "off"))) {
        fprintf(stderr, "pipert: --watchdog must be >= 0 seconds and --progress auto, on or off\n");
        return done(rt, 1, 0);
    }
    if (save_every > 0 && !rt->save_dir) {
        fprintf(stderr, "pipert: --save-every needs --save DIR\n");
        return done(rt, 1, 0);
    }
    openblas_set_num_threads(1);
    MPI_Init(&argc, &argv);
    unsigned have = HAVE_MPI;
    catch_signals();
    MPI_Comm_rank(MPI_COMM_WORLD, &rt->rank);
    MPI_Comm_size(MPI_COMM_WORLD, &rt->world);
    char err[1400];
    if (plan_read(path, &rt->f, &rt->p, err, sizeof err) != 0) {
        if (rt->rank == 0)
            fprintf(stderr, "pipert: %s\n", err);
        return done(rt, 1, have);
    }
    have |= HAVE_PLAN;
    int S = rt->f.part.stages;
    int64_t fixed = rt->f.cfg.data_parallel;
    const char *bad = NULL;
    char why[256];
    if (rt->world % S != 0) {
        snprintf(why, sizeof why, "the world has %d rank%s, not a multiple of the plan's %d stages", rt->world,
                 rt->world == 1 ? "" : "s", S);
        bad = why;
    } else if (fixed && rt->world != S * fixed) {
        snprintf(why, sizeof why, "the plan fixes data_parallel = %lld: the world must be %lld ranks (%d stages x %lld), not %d",
                 (long long)fixed, (long long)(S * fixed), S, (long long)fixed, rt->world);
        bad = why;
    }
    if (bad) {
        if (rt->rank == 0)
            fprintf(stderr, "pipert: %s: %s\n", path, bad);
        return done(rt, 1, have);
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
    rt->dp = rt->world / S;
    rt->stage = rt->rank / rt->dp;
    rt->dpi = rt->rank % rt->dp;
    PcConfig *cfg = &rt->f.cfg;
    if (steps >= 0)
        cfg->steps = steps;
    if (seed >= 0)
        cfg->seed = (uint64_t)seed;
    if (data)
        override_path(&rt->f.arena, &cfg->data, data);
    if (eval_data)
        override_path(&rt->f.arena, &cfg->eval_data, eval_data);
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
    if (has_first(rt) || has_last(rt)) {
        if (rt_data_open(&rt->data, &cfg->data, rt->m, cfg->seed, 0, err, sizeof err) != 0)
            rt_fail(rt, __FILE__, __LINE__, "training data: %s", err);
        if (cfg->eval_data.set) {
            if (rt_data_open(&rt->eval, &cfg->eval_data, rt->m, cfg->seed, 1, err, sizeof err) != 0)
                rt_fail(rt, __FILE__, __LINE__, "evaluation data: %s", err);
        }
    }
    have |= HAVE_DATA;
    rt->have_eval = cfg->eval_data.set;
    if (rt->have_eval) {
        /* every rank needs the evaluation size: the first and last stages know it */
        int64_t n = rt->eval.n;
        RT_MPI(rt, MPI_Allreduce(MPI_IN_PLACE, &n, 1, MPI_INT64_T, MPI_MAX, MPI_COMM_WORLD));
        rt->eval.n = n;
    }
    if (rt->verbose) {
        printf("[rank %d] pid %ld, stage %d of %d, replica %d of %d: %lld parameters (%.1f MiB with gradients and optimizer "
               "state), activation slots %.1f MiB (the plan predicted a peak of %.1f MiB), recompute workspace %.1f "
               "MiB\n",
               rt->rank, (long)getpid(), rt->stage, S, rt->dpi, rt->dp, (long long)rt->nparams_total,
               rt->nparams_total * 4.0 * (2 + rt_optim_state_per_param(cfg)) / (1 << 20), slot_mib(rt),
               rt->p.train_sim.peak_bytes[rt->stage] / (1 << 20), ws_mib(rt));
        fflush(stdout);
    }
    if (resume) {
        rt_ckpt_resume(rt, &man);
        if (has_last(rt) && rt->dpi == 0)
            printf("resumed from %s at step %lld of %lld\n", resume, (long long)rt->step, (long long)cfg->steps);
        rt_ckpt_manifest_free(&man);
    }
    int reporter = has_last(rt) && rt->dpi == 0;
    if (reporter && rt->metrics_path) {
        rt->metrics = fopen(rt->metrics_path, resume ? "a" : "w");
        RT_CHECK(rt, rt->metrics, "cannot write %s", rt->metrics_path);
    }
    if (rt->metrics_path)
        memory_records(rt);
    int32_t *tmp = rt_alloc(rt, (pc_tensor_elems(&rt->m->target[0].t) + 1) * sizeof(int32_t), "targets");
    int stopped = 0, interrupted = 0;
    int live = reporter && (!strcmp(progress, "on") || (!strcmp(progress, "auto") && terminal_stdout()));
    double last_live = 0;
    if (trace)
        rt_trace_open(rt, cfg->steps - rt->step);
    /* everyone set up: the watchdog counts from here */
    RT_MPI(rt, MPI_Barrier(MPI_COMM_WORLD));
    double t_start = MPI_Wtime();
    int64_t first_step = rt->step;
    for (; rt->step < cfg->steps; rt->step++) {
        double t0 = MPI_Wtime();
        if (has_last(rt))
            target_scale(rt, tmp);
        rt->loss_sum = 0, rt->loss_count = 0, rt->correct = 0;
        rt_run_program(rt, &rt->p.train.prog[rt->stage], 0);
        double t1 = MPI_Wtime();
        if (rt->bad_stage >= 0) {
            /* every rank of the lane knows; replica 0 of the first stage says it */
            if (rt->stage == 0 && rt->dpi == 0)
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
        if (reporter && (s % rt->log_every == 0 || s == cfg->steps)) {
            if (live)
                printf("\r\033[K");
            double l = loss[1] > 0 ? loss[0] / loss[1] : 0, ms = (t1 - t0) * 1e3;
            double sps = rt->global_batch / (t1 - t0), lr = rt_lr_at(cfg, rt->step);
            printf("step %lld/%lld loss %.4f lr %.1e %.0f samples/s %.1f ms/step\n", (long long)s,
                   (long long)cfg->steps, l, lr, sps, ms);
            fflush(stdout);
            if (rt->metrics) {
                fprintf(rt->metrics, "{\"step\": %lld, \"loss\": %.9g, \"lr\": %.9g, \"samples_per_s\": %.9g, "
                                     "\"step_ms\": %.9g}\n",
                        (long long)s, l, lr, sps, ms);
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
    if (stopped) {
        free(tmp);
        return done(rt, 1, have);
    }
    if (rt->save_dir)
        rt_ckpt_save(rt, rt->step);
    if (interrupted) {
        fflush(stdout);
        free(tmp);
        return done(rt, 0, have);
    }
    evaluate(rt, cfg->steps, 1);
    if (reporter)
        printf("trained %lld steps of %lld samples in %.1f s (%.0f samples/s) on %d rank%s: %d stage%s x %d replica%s\n",
               (long long)(cfg->steps - first_step), (long long)rt->global_batch, total,
               total > 0 ? (cfg->steps - first_step) * rt->global_batch / total : 0.0, rt->world, rt->world == 1 ? "" : "s", S,
               S == 1 ? "" : "s", rt->dp, rt->dp == 1 ? "" : "s");
    free(tmp);
    return done(rt, 0, have);
}
