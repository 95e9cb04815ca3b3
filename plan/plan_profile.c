/* plan/plan_profile.c: the profile file, written and read (plan_profile.h).
 *
 *   {"format": "pipe-profile", "version": 1,
 *    "model": "gpt_tiny", "model_hash": "89ab...", "micro_batch_size": 8,
 *    "micro_batches": 4, "backend": "cpu", "device": "...", "threads": 1,
 *    "steps": 6, "warmup_steps": 1,
 *    "layers": [{"index": 0, "kind": "embedding", "forward_ms": 0.01,
 *                "backward_input_ms": 0, "backward_weight_ms": 0.02,
 *                "activation_bytes": 65536, "saved_bytes": 0, "samples": 20}, ...],
 *    "loss_ms": 0.3, "load_ms": 0.01, "optimizer_ns_per_param": 1.1,
 *    "step_ms": 42.0,
 *    "links": [{"from_stage": 0, "to_stage": 1, "latency_us": 2.1,
 *               "bandwidth_gbps": 6.5}]}
 *
 * Times are written in the units people read (ms, us, ns per parameter,
 * GB/s) and held in seconds and bytes per second. */
#include "plan_profile.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base_alloc.h"
#include "base_file.h"
#include "base_json.h"
#include "plan_ir.h"
#include "plan_memory.h"

#define PROFILE_MAX_BYTES ((size_t)256 << 20)

int plan_profile_write(const char *path, const PlanProfile *p, char *err, size_t errsize)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *o = open_memstream(&buf, &len);
    if (!o) {
        snprintf(err, errsize, "cannot write '%s': out of memory", path);
        return -1;
    }
    fprintf(o, "{\"format\": \"%s\", \"version\": %d,\n \"model\": ", PLAN_PROFILE_FORMAT, PLAN_PROFILE_VERSION);
    base_json_put_str(o, p->model);
    fprintf(o, ", \"model_hash\": \"%016" PRIx64 "\", \"micro_batch_size\": %" PRId64 ", \"micro_batches\": %" PRId64
               ",\n \"backend\": ",
            p->model_hash, p->micro_batch_size, p->micro_batches);
    base_json_put_str(o, p->backend);
    fputs(", \"device\": ", o);
    base_json_put_str(o, p->device);
    fprintf(o, ", \"threads\": %" PRId64 ", \"steps\": %" PRId64 ", \"warmup_steps\": %" PRId64 ",\n \"layers\": [",
            p->threads, p->steps, p->warmup_steps);
    for (int i = 0; i < p->nlayers; i++) {
        const PlanProfileLayer *L = &p->layer[i];
        fprintf(o,
                "%s\n  {\"index\": %d, \"forward_ms\": %.6g, \"backward_input_ms\": %.6g, \"backward_weight_ms\": %.6g, "
                "\"activation_bytes\": %" PRId64 ", \"saved_bytes\": %" PRId64 ", \"samples\": %" PRId64 "}",
                i ? "," : "", i, L->forward * 1e3, L->backward_input * 1e3, L->backward_weight * 1e3,
                L->activation_bytes, L->saved_bytes, L->samples);
    }
    fprintf(o, "],\n \"loss_ms\": %.6g, \"load_ms\": %.6g, \"optimizer_ns_per_param\": %.6g, \"step_ms\": %.6g,\n"
               " \"links\": [",
            p->loss * 1e3, p->load * 1e3, p->optimizer_per_param * 1e9, p->step * 1e3);
    for (int i = 0; i < p->nlinks; i++)
        fprintf(o, "%s\n  {\"from_stage\": %d, \"to_stage\": %d, \"latency_us\": %.6g, \"bandwidth_gbps\": %.6g}",
                i ? "," : "", p->link[i].from_stage, p->link[i].to_stage, p->link[i].latency * 1e6,
                p->link[i].bandwidth / 1e9);
    fputs("]}\n", o);
    if (fclose(o) != 0 || !buf) {
        free(buf);
        snprintf(err, errsize, "cannot write '%s': out of memory", path);
        return -1;
    }
    int rc = base_write_atomic(path, buf, len, err, errsize);
    free(buf);
    return rc;
}

/* ---- reading ---------------------------------------------------------- */

typedef struct Rd {
    const char *path;
    char *err;
    size_t errsize;
    int failed;
} Rd;

static void rd_fail(Rd *r, const char *fmt, const char *what)
{
    if (r->failed)
        return;
    r->failed = 1;
    char msg[256];
    snprintf(msg, sizeof msg, fmt, what);
    snprintf(r->err, r->errsize, "profile '%s': %s", r->path, msg);
}

static double rd_num(Rd *r, const BaseJson *obj, const char *key, const char *where)
{
    const BaseJson *v = base_json_get(obj, key);
    double x = 0;
    int64_t i;
    if (base_json_int(v, &i) == 0)
        x = (double)i;
    else if (base_json_is(v, BASE_JSON_REAL))
        x = base_json_real(v);
    else {
        char w[160];
        snprintf(w, sizeof w, "%s%s", where, key);
        rd_fail(r, "%s: missing, or not a number", w);
        return 0;
    }
    if (!(x >= 0)) {
        char w[160];
        snprintf(w, sizeof w, "%s%s", where, key);
        rd_fail(r, "%s: negative", w);
    }
    return x;
}

static int64_t rd_int(Rd *r, const BaseJson *obj, const char *key, const char *where)
{
    int64_t x = 0;
    if (base_json_uint(base_json_get(obj, key), &x) != 0) {
        char w[160];
        snprintf(w, sizeof w, "%s%s", where, key);
        rd_fail(r, "%s: missing, or not a whole number >= 0", w);
    }
    return x;
}

static void rd_str(Rd *r, const BaseJson *obj, const char *key, char *out, size_t size)
{
    const char *s = base_json_str(base_json_get(obj, key));
    if (!s) {
        rd_fail(r, "%s: missing, or not a string", key);
        return;
    }
    snprintf(out, size, "%s", s);
}

int plan_profile_read(const char *path, PlanProfile *p, char *err, size_t errsize)
{
    memset(p, 0, sizeof *p);
    unsigned char *text = NULL;
    size_t len = 0;
    char why[256];
    if (base_read_file(path, PROFILE_MAX_BYTES, &text, &len, why, sizeof why) != BASE_READ_OK) {
        snprintf(err, errsize, "cannot read profile '%s': %s", path, why);
        return -1;
    }
    BaseJsonError je;
    BaseJson *root = base_json_parse(text, len, &je);
    free(text);
    if (!root) {
        snprintf(err, errsize, "profile '%s': not JSON at line %d, column %d: %s", path, je.line, je.column, je.text);
        return -1;
    }
    Rd r = {path, err, errsize, 0};
    const char *fmt = base_json_str(base_json_get(root, "format"));
    int64_t version = 0;
    if (!fmt || strcmp(fmt, PLAN_PROFILE_FORMAT) != 0)
        rd_fail(&r, "%s", "not a pipe profile (\"format\" is not \"pipe-profile\"; pipert --profile FILE writes one)");
    else if (base_json_int(base_json_get(root, "version"), &version) != 0 || version != PLAN_PROFILE_VERSION)
        rd_fail(&r, "%s", "a version this pipec does not read (it reads version 1)");
    rd_str(&r, root, "model", p->model, sizeof p->model);
    char hash[32] = "";
    rd_str(&r, root, "model_hash", hash, sizeof hash);
    char *end = NULL;
    if (!r.failed) {
        p->model_hash = strtoull(hash, &end, 16);
        if (strlen(hash) != 16 || *end)
            rd_fail(&r, "%s", "model_hash: not 16 hexadecimal digits");
    }
    p->micro_batch_size = rd_int(&r, root, "micro_batch_size", "");
    p->micro_batches = rd_int(&r, root, "micro_batches", "");
    rd_str(&r, root, "backend", p->backend, sizeof p->backend);
    rd_str(&r, root, "device", p->device, sizeof p->device);
    p->threads = rd_int(&r, root, "threads", "");
    p->steps = rd_int(&r, root, "steps", "");
    p->warmup_steps = rd_int(&r, root, "warmup_steps", "");
    p->loss = rd_num(&r, root, "loss_ms", "") / 1e3;
    p->load = rd_num(&r, root, "load_ms", "") / 1e3;
    p->optimizer_per_param = rd_num(&r, root, "optimizer_ns_per_param", "") / 1e9;
    p->step = rd_num(&r, root, "step_ms", "") / 1e3;
    const BaseJson *layers = base_json_get(root, "layers");
    if (!r.failed && !base_json_is(layers, BASE_JSON_ARRAY))
        rd_fail(&r, "%s", "layers: missing, or not an array");
    if (!r.failed) {
        p->nlayers = (int)base_json_len(layers);
        p->layer = base_calloc(p->nlayers > 0 ? p->nlayers : 1, sizeof *p->layer);
        for (int i = 0; i < p->nlayers && !r.failed; i++) {
            const BaseJson *L = base_json_at(layers, (size_t)i);
            char where[48];
            snprintf(where, sizeof where, "layers[%d].", i);
            int64_t index = rd_int(&r, L, "index", where);
            if (!r.failed && index != i) {
                snprintf(where, sizeof where, "layers[%d]", i);
                rd_fail(&r, "%s: index is not its position", where);
            }
            PlanProfileLayer *q = &p->layer[i];
            q->forward = rd_num(&r, L, "forward_ms", where) / 1e3;
            q->backward_input = rd_num(&r, L, "backward_input_ms", where) / 1e3;
            q->backward_weight = rd_num(&r, L, "backward_weight_ms", where) / 1e3;
            q->activation_bytes = rd_int(&r, L, "activation_bytes", where);
            q->saved_bytes = rd_int(&r, L, "saved_bytes", where);
            q->samples = rd_int(&r, L, "samples", where);
        }
    }
    const BaseJson *links = base_json_get(root, "links");
    if (!r.failed && !base_json_is(links, BASE_JSON_ARRAY))
        rd_fail(&r, "%s", "links: missing, or not an array");
    if (!r.failed) {
        p->nlinks = (int)base_json_len(links);
        p->link = base_calloc(p->nlinks > 0 ? p->nlinks : 1, sizeof *p->link);
        for (int i = 0; i < p->nlinks && !r.failed; i++) {
            const BaseJson *l = base_json_at(links, (size_t)i);
            char where[48];
            snprintf(where, sizeof where, "links[%d].", i);
            p->link[i].from_stage = (int)rd_int(&r, l, "from_stage", where);
            p->link[i].to_stage = (int)rd_int(&r, l, "to_stage", where);
            p->link[i].latency = rd_num(&r, l, "latency_us", where) / 1e6;
            p->link[i].bandwidth = rd_num(&r, l, "bandwidth_gbps", where) * 1e9;
        }
    }
    base_json_free(root);
    if (r.failed) {
        plan_profile_free(p);
        return -1;
    }
    return 0;
}

void plan_profile_free(PlanProfile *p)
{
    free(p->layer);
    free(p->link);
    p->layer = NULL;
    p->link = NULL;
    p->nlayers = p->nlinks = 0;
}

int plan_profile_check(const PlanProfile *p, const PlanModel *m, int64_t B, char *err, size_t errsize)
{
    uint64_t h = plan_model_hash(m);
    if (p->model_hash != h || p->nlayers != m->nlayers) {
        snprintf(err, errsize,
                 "the profile was measured on model '%s' (hash %016" PRIx64 ", %d layers), not on this model '%s' "
                 "(hash %016" PRIx64 ", %d layers): profile this model (pipert PLAN --profile FILE)",
                 p->model, p->model_hash, p->nlayers, m->name, h, m->nlayers);
        return -1;
    }
    if (p->micro_batch_size != B) {
        snprintf(err, errsize,
                 "the profile was measured at micro_batch_size %" PRId64 ", this plan has %" PRId64
                 ": times do not scale linearly with it; profile at %" PRId64,
                 p->micro_batch_size, B, B);
        return -1;
    }
    return 0;
}

int64_t plan_profile_layer_ns(const PlanProfile *p, int i)
{
    const PlanProfileLayer *L = &p->layer[i];
    double ns = (L->forward + L->backward_input + L->backward_weight) * 1e9;
    return ns < 1 ? 1 : (int64_t)(ns + 0.5);
}

void plan_profile_costs(const PlanProfile *p, const PlanModel *m, const PlanPartition *pt, PlanSchedule *s)
{
    for (int st = 0; st < pt->stages; st++)
        s->cost_opt[st] = p->optimizer_per_param * (double)plan_stage_param_elems(m, pt, st);
    s->link_latency = 0, s->link_bandwidth = 0;
    for (int i = 0; i < p->nlinks; i++) {
        if (p->link[i].latency > s->link_latency)
            s->link_latency = p->link[i].latency;
        if (p->link[i].bandwidth > 0 && (s->link_bandwidth == 0 || p->link[i].bandwidth < s->link_bandwidth))
            s->link_bandwidth = p->link[i].bandwidth;
    }
}
