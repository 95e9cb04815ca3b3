/* schedules/sched_picture.c: pictures of a simulated plan. Owns the SVG timeline
 * (one row per stage, a box per compute instruction, a line per transfer,
 * fixed-width boxes for the reductions and the optimizer step, a legend and
 * the predicted step time) and the Chrome trace (Trace Event Format JSON,
 * for Perfetto and chrome://tracing: one thread per stage, one complete
 * event per instruction, a flow arrow from each send to the compute that
 * consumes it). Both read the plan and its simulation and nothing else:
 * the output is self-contained, no fonts, styles or scripts fetched. */
#include "sched_picture.h"
#include "base_alloc.h"
#include "base_json.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- shared helpers ------------------------------------------------------ */

static int is_compute(int op)
{
    return op == SCHED_Forward || op == SCHED_Backward || op == SCHED_BackwardInput || op == SCHED_BackwardWeight;
}

static int is_collective(int op)
{
    return op == SCHED_ReduceTiedGrads || op == SCHED_ReduceGrads || op == SCHED_OptimizerStep;
}

static int is_send(int op)
{
    return op == SCHED_SendActivation || op == SCHED_SendGrad;
}

/* A plan that failed verification has times only for what ran before the
 * simulator stopped; the rest would be drawn at 0 and lie. */
static int ran(const SchedSim *sim, int s, int pc)
{
    if (sim->ok || !sim->stuck_pc)
        return 1;
    return sim->stuck_pc[s] < 0 || pc < sim->stuck_pc[s];
}

/* JSON forbids NaN and infinities; a broken cost model must not make the
 * whole trace unreadable. */
static double finite(double x)
{
    return isfinite(x) ? x : 0.0;
}

/* ---- SVG ------------------------------------------------------------------ */

/* Geometry, in px. The step spans PLOT_W; the tail leaves room for three
 * collective boxes after the stage that finishes last. */
enum {
    LEFT = 72,
    PLOT_W = 1200,
    COLL_W = 40,
    COLL_GAP = 4,
    TAIL = 3 * (COLL_W + COLL_GAP) + 12,
    RIGHT = 16,
    TITLE_H = 30,
    AXIS_H = 22,
    ROW_H = 28,
    ROW_GAP = 14,
    LEGEND_LINE = 20,
    LEGEND_H = 2 * LEGEND_LINE + 10,
    FOOTER_H = 22,
};

/* Micro-batch hues (Tableau 10 without its grey, which marks collectives):
 * medium tones, so a darker shade (B, I) and a lighter tint (W) of each
 * stay tellable from one another and from the neighbouring hues. */
static const unsigned PALETTE[] = {0x4e79a7, 0xf28e2b, 0xe15759, 0x76b7b2, 0x59a14f,
                                   0xedc948, 0xb07aa1, 0x9c755f, 0xff9da7};
#define NPALETTE ((int)(sizeof PALETTE / sizeof PALETTE[0]))

static const char ACT_COLOUR[] = "#1f2d3d";
static const char GRAD_COLOUR[] = "#c2185b";

/* Colour of the collective boxes, and of their text. */
static const char *const COLL_FILL[3] = {"#d7ccc8", "#9e9e9e", "#37474f"};
static const char *const COLL_INK[3] = {"#111", "#111", "#fff"};

static unsigned mix(unsigned rgb, double f, unsigned toward)
{
    unsigned out = 0;
    for (int sh = 16; sh >= 0; sh -= 8) {
        double a = (rgb >> sh) & 0xff, b = (toward >> sh) & 0xff;
        unsigned c = (unsigned)lround(a + (b - a) * f);
        out |= (c > 255 ? 255 : c) << sh;
    }
    return out;
}

static int dark(unsigned rgb)
{
    double r = (rgb >> 16) & 0xff, g = (rgb >> 8) & 0xff, b = rgb & 0xff;
    return 0.299 * r + 0.587 * g + 0.114 * b < 150;
}

/* Fill, outline and text colour of one compute box. */
static void compute_colours(int op, int mb, unsigned *fill, unsigned *stroke, unsigned *ink)
{
    unsigned base = PALETTE[(mb < 0 ? 0 : mb) % NPALETTE];
    switch (op) {
    case SCHED_Backward:
    case SCHED_BackwardInput:
        *fill = mix(base, 0.38, 0x000000);
        *stroke = 0xffffff;
        break;
    case SCHED_BackwardWeight:
        *fill = mix(base, 0.6, 0xffffff);
        *stroke = mix(base, 0.38, 0x000000);
        break;
    default:
        *fill = base;
        *stroke = 0xffffff;
        break;
    }
    *ink = dark(*fill) ? 0xffffff : 0x111111;
}

/* Text content and attribute values alike: the title is the user's. XML 1.0
 * allows no control characters but tab and newlines, not even escaped. */
static void xml_puts(FILE *out, const char *s)
{
    for (; s && *s; s++) {
        unsigned char c = (unsigned char)*s;
        switch (c) {
        case '&': fputs("&amp;", out); break;
        case '<': fputs("&lt;", out); break;
        case '>': fputs("&gt;", out); break;
        case '"': fputs("&quot;", out); break;
        case '\'': fputs("&apos;", out); break;
        default:
            if (c < 0x20 && c != '\t' && c != '\n' && c != '\r')
                fputc(' ', out);
            else
                fputc(c, out);
        }
    }
}

/* 1, 2 or 5 times a power of ten, near raw: tick spacing a reader can add. */
static double nice_step(double raw)
{
    if (!(raw > 0))
        return 1;
    double e = pow(10, floor(log10(raw)));
    double f = raw / e;
    return (f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10) * e;
}

/* The label's width in px at font-size 11 (sans-serif digits and capitals
 * average about 6.5 px); a label is drawn only where it fits. */
static double text_w(const char *s)
{
    return 6.5 * (double)strlen(s);
}

static void svg_tooltip(FILE *out, const SchedInstr *in, int s, int pc, double t0, double t1)
{
    char text[160];
    sched_instr_text(in, text, sizeof text);
    fprintf(out, "<title>stage %d pc %d: ", s, pc);
    xml_puts(out, text);
    fprintf(out, " [%.6g .. %.6g]</title>", finite(t0), finite(t1));
}

static void svg_compute(FILE *out, const SchedInstr *in, int s, int pc, double t0, double t1, double x0, double x1,
                        double y)
{
    unsigned fill, stroke, ink;
    compute_colours(in->op, in->mb, &fill, &stroke, &ink);
    /* inset by half a pixel each side so that back-to-back boxes of one
     * micro-batch still read as two */
    double w = x1 - x0 - 1;
    if (w < 1)
        w = 1;
    double sw = in->op == SCHED_BackwardWeight ? 1.2 : 0.6;
    fprintf(out,
            "<rect x=\"%.2f\" y=\"%d\" width=\"%.2f\" height=\"%d\" fill=\"#%06x\" "
            "stroke=\"#%06x\" stroke-width=\"%.1f\">",
            x0 + 0.5, (int)y, w, ROW_H, fill, stroke, sw);
    svg_tooltip(out, in, s, pc, t0, t1);
    fputs("</rect>\n", out);
    /* a corner mark for chunks past the first: a narrow box's label is
     * only its micro-batch, and F3 and F3.1 sit on one stage in V and
     * interleaved schedules */
    if (in->chunk > 0 && w >= 8)
        fprintf(out, "<path d=\"M%.2f,%d h6 v6 z\" fill=\"#%06x\" opacity=\"0.7\"/>\n", x0 + 0.5 + w - 6, (int)y, ink);
    char label[32];
    sched_instr_label(in, label, sizeof label);
    if (text_w(label) + 4 > w) {
        /* narrow: the micro-batch alone; the shade says which pass */
        snprintf(label, sizeof label, "%d", in->mb);
        if (text_w(label) + 2 > w)
            return;
    }
    fprintf(out, "<text x=\"%.2f\" y=\"%d\" text-anchor=\"middle\" fill=\"#%06x\">%s</text>\n", x0 + 0.5 + w / 2,
            (int)y + ROW_H / 2 + 4, ink, label);
}

static int coll_index(int op)
{
    return op == SCHED_ReduceTiedGrads ? 0 : op == SCHED_ReduceGrads ? 1 : 2;
}

static void svg_collective(FILE *out, const SchedInstr *in, int s, int pc, double t, double x, double y)
{
    int k = coll_index(in->op);
    char label[32];
    sched_instr_label(in, label, sizeof label);
    fprintf(out,
            "<rect x=\"%.2f\" y=\"%d\" width=\"%d\" height=\"%d\" rx=\"3\" fill=\"%s\" "
            "stroke=\"#263238\" stroke-width=\"0.8\">",
            x, (int)y + 3, COLL_W, ROW_H - 6, COLL_FILL[k]);
    svg_tooltip(out, in, s, pc, t, t);
    fputs("</rect>\n", out);
    fprintf(out, "<text x=\"%.2f\" y=\"%d\" text-anchor=\"middle\" font-size=\"10\" fill=\"%s\">%s</text>\n",
            x + COLL_W / 2.0, (int)y + ROW_H / 2 + 4, COLL_INK[k], label);
}

static void svg_legend(FILE *out, double y)
{
    double x = LEFT;
    /* I has B's shade: the two never share a schedule */
    static const struct {
        int op;
        const char *text;
    } computes[] = {
        {SCHED_Forward, "F forward"},
        {SCHED_Backward, "B backward / I input grad"},
        {SCHED_BackwardWeight, "W weight grad"},
    };
    for (size_t i = 0; i < sizeof computes / sizeof computes[0]; i++) {
        unsigned fill, stroke, ink;
        compute_colours(computes[i].op, 0, &fill, &stroke, &ink);
        fprintf(out,
                "<rect x=\"%.1f\" y=\"%.1f\" width=\"22\" height=\"14\" fill=\"#%06x\" "
                "stroke=\"#%06x\" stroke-width=\"1\"/>\n",
                x, y - 11, fill, computes[i].op == SCHED_BackwardWeight ? stroke : fill);
        fprintf(out, "<text x=\"%.1f\" y=\"%.1f\">%s</text>\n", x + 27, y, computes[i].text);
        x += 27 + text_w(computes[i].text) + 18;
    }
    fprintf(out,
            "<text x=\"%.1f\" y=\"%.1f\" fill=\"#555\">colour: micro-batch; corner "
            "mark: chunk 1 or later (F3.1)</text>\n",
            x, y);
    /* a second line: one line of everything is wider than the picture */
    x = LEFT;
    y += LEGEND_LINE;
    fprintf(out,
            "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" "
            "stroke-width=\"1.4\" marker-end=\"url(#arrow-act)\"/>\n",
            x, y - 4, x + 26, y - 4, ACT_COLOUR);
    fprintf(out, "<text x=\"%.1f\" y=\"%.1f\">activation send</text>\n", x + 32, y);
    x += 32 + text_w("activation send") + 18;
    fprintf(out,
            "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" "
            "stroke-width=\"1.4\" stroke-dasharray=\"4 2\" marker-end=\"url(#arrow-grad)\"/>\n",
            x, y - 4, x + 26, y - 4, GRAD_COLOUR);
    fprintf(out, "<text x=\"%.1f\" y=\"%.1f\">gradient send</text>\n", x + 32, y);
    x += 32 + text_w("gradient send") + 18;
    static const char *const names[3] = {"tied: ReduceTiedGrads", "reduce: ReduceGrads", "step: OptimizerStep"};
    for (int k = 0; k < 3; k++) {
        fprintf(out,
                "<rect x=\"%.1f\" y=\"%.1f\" width=\"22\" height=\"14\" rx=\"3\" "
                "fill=\"%s\" stroke=\"#263238\" stroke-width=\"0.8\"/>\n",
                x, y - 11, COLL_FILL[k]);
        fprintf(out, "<text x=\"%.1f\" y=\"%.1f\">%s</text>\n", x + 27, y, names[k]);
        x += 27 + text_w(names[k]) + 14;
    }
}

void sched_emit_svg(FILE *out, const SchedPlan *plan, const SchedSim *sim, const char *title)
{
    int S = plan->stages;
    /* The step time is the scale; a failed simulation has none, so fall
     * back to the latest time anything reached. */
    double extent = sim->step_time > 0 ? sim->step_time : 0;
    for (int s = 0; s < S; s++)
        for (int pc = 0; pc < plan->prog[s].n; pc++)
            if (ran(sim, s, pc) && finite(sim->end[s][pc]) > extent)
                extent = finite(sim->end[s][pc]);
    if (!(extent > 0))
        extent = 1;
    double sx = PLOT_W / extent;

    int rows_y = TITLE_H + AXIS_H;
    int rows_h = S * ROW_H + (S > 0 ? (S - 1) * ROW_GAP : 0);
    int width = LEFT + PLOT_W + TAIL + RIGHT;
    int height = rows_y + rows_h + 12 + LEGEND_H + FOOTER_H + 8;
#define ROW_Y(s) ((double)rows_y + (s) * (ROW_H + ROW_GAP))
#define X(t) (LEFT + finite(t) * sx)

    fputs("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n", out);
    fprintf(out,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
            "font-family=\"Helvetica, Arial, sans-serif\" font-size=\"11\">\n",
            width, height, width, height);
    fputs("<title>", out);
    xml_puts(out, title);
    fputs("</title>\n", out);
    fprintf(out,
            "<defs>\n"
            "<marker id=\"arrow-act\" viewBox=\"0 0 8 8\" refX=\"8\" refY=\"4\" markerWidth=\"6\" markerHeight=\"6\" "
            "markerUnits=\"userSpaceOnUse\" orient=\"auto\"><path d=\"M0,0 L8,4 L0,8 z\" fill=\"%s\"/></marker>\n"
            "<marker id=\"arrow-grad\" viewBox=\"0 0 8 8\" refX=\"8\" refY=\"4\" markerWidth=\"6\" markerHeight=\"6\" "
            "markerUnits=\"userSpaceOnUse\" orient=\"auto\"><path d=\"M0,0 L8,4 L0,8 z\" fill=\"%s\"/></marker>\n"
            "</defs>\n",
            ACT_COLOUR, GRAD_COLOUR);
    fprintf(out, "<rect x=\"0\" y=\"0\" width=\"%d\" height=\"%d\" fill=\"#ffffff\"/>\n", width, height);
    fprintf(out, "<text x=\"%d\" y=\"20\" font-size=\"15\" font-weight=\"bold\">", LEFT);
    xml_puts(out, title);
    fputs("</text>\n", out);

    /* time axis and grid, under everything else */
    double tick = nice_step(extent / 12);
    fputs("<g stroke=\"#e4e4e4\" stroke-width=\"1\">\n", out);
    for (int i = 0; i * tick <= extent * (1 + 1e-9); i++)
        fprintf(out, "<line x1=\"%.2f\" y1=\"%d\" x2=\"%.2f\" y2=\"%d\"/>\n", X(i * tick), rows_y - 4, X(i * tick),
                rows_y + rows_h + 2);
    /* labels in the unit that suits the step (the simulator counts seconds) */
    static const struct {
        double scale;
        const char *name;
    } units[] = {{1, "s"}, {1e3, "ms"}, {1e6, "us"}, {1e9, "ns"}};
    int u = 0;
    while (u < 3 && extent * units[u].scale < 1)
        u++;
    fputs("</g>\n<g fill=\"#666\" font-size=\"10\" text-anchor=\"middle\">\n", out);
    for (int i = 0; i * tick <= extent * (1 + 1e-9); i++)
        fprintf(out, "<text x=\"%.2f\" y=\"%d\">%.6g</text>\n", X(i * tick), rows_y - 8, i * tick * units[u].scale);
    fputs("</g>\n", out);
    fprintf(out, "<text x=\"8\" y=\"%d\" font-size=\"10\" fill=\"#666\">time (%s)</text>\n", rows_y - 8,
            units[u].name);
    fprintf(out, "<line x1=\"%.2f\" y1=\"%d\" x2=\"%.2f\" y2=\"%d\" stroke=\"#888\" stroke-dasharray=\"2 2\"/>\n",
            X(extent), rows_y - 4, X(extent), rows_y + rows_h + 2);

    for (int s = 0; s < S; s++) {
        const SchedProgram *pr = &plan->prog[s];
        double y = ROW_Y(s);
        fprintf(out, "<text x=\"8\" y=\"%d\" font-size=\"12\">stage %d</text>\n", (int)y + ROW_H / 2 + 4, s);
        fprintf(out, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"#f6f6f6\"/>\n", LEFT, (int)y, PLOT_W,
                ROW_H);
        fputs("<g>\n", out);
        double last = 0;
        int any = 0;
        for (int pc = 0; pc < pr->n; pc++) {
            const SchedInstr *in = &pr->ins[pc];
            if (!is_compute(in->op) || !ran(sim, s, pc))
                continue;
            double t0 = sim->start[s][pc], t1 = sim->end[s][pc];
            svg_compute(out, in, s, pc, t0, t1, X(t0), X(t1), y);
            if (!any || sim->end[s][pc] > last)
                last = sim->end[s][pc];
            any = 1;
        }
        /* Collectives take no simulated time, so they get a fixed width
         * after the stage's last compute, or later where the simulator
         * made them wait (a barrier for tied weights or clipping). */
        double cursor = X(last) + COLL_GAP;
        for (int pc = 0; pc < pr->n; pc++) {
            const SchedInstr *in = &pr->ins[pc];
            if (!is_collective(in->op) || !ran(sim, s, pc))
                continue;
            double x = X(sim->start[s][pc]) + COLL_GAP;
            if (x < cursor)
                x = cursor;
            svg_collective(out, in, s, pc, sim->start[s][pc], x, y);
            cursor = x + COLL_W + COLL_GAP;
        }
        fputs("</g>\n", out);
    }

    /* Transfers last, on top: from the edge of the sender's row at the
     * send's start to the facing edge of the receiver's row at arrival. */
    fputs("<g stroke-width=\"1.2\" fill=\"none\" opacity=\"0.85\">\n", out);
    for (int s = 0; s < S; s++) {
        const SchedProgram *pr = &plan->prog[s];
        for (int pc = 0; pc < pr->n; pc++) {
            const SchedInstr *in = &pr->ins[pc];
            if (!is_send(in->op) || !ran(sim, s, pc) || in->peer < 0 || in->peer >= S || in->peer == s)
                continue;
            int grad = in->op == SCHED_SendGrad;
            int down = in->peer > s;
            double y1 = down ? ROW_Y(s) + ROW_H : ROW_Y(s);
            double y2 = down ? ROW_Y(in->peer) : ROW_Y(in->peer) + ROW_H;
            /* an activation going one way and a gradient the other often
             * cross one gap at the same instant: nudge them apart */
            double dx = grad ? 1.5 : -1.5;
            fprintf(out,
                    "<line x1=\"%.2f\" y1=\"%.1f\" x2=\"%.2f\" y2=\"%.1f\" stroke=\"%s\"%s "
                    "marker-end=\"url(#%s)\">",
                    X(sim->start[s][pc]) + dx, y1, X(sim->end[s][pc]) + dx, y2, grad ? GRAD_COLOUR : ACT_COLOUR,
                    grad ? " stroke-dasharray=\"3 2\"" : "", grad ? "arrow-grad" : "arrow-act");
            svg_tooltip(out, in, s, pc, sim->start[s][pc], sim->end[s][pc]);
            fputs("</line>\n", out);
        }
    }
    fputs("</g>\n", out);

    double ly = rows_y + rows_h + 12 + 18;
    svg_legend(out, ly);
    fprintf(out, "<text x=\"%d\" y=\"%.1f\" font-size=\"12\">", LEFT, ly + LEGEND_H + 2);
    if (sim->ok)
        fprintf(out, "predicted step %.4g, bubble %.1f%%, %d stages, %d micro-batches", finite(sim->step_time),
                100 * finite(sim->bubble), S, plan->micro_batches);
    else {
        fputs("did not verify: ", out);
        xml_puts(out, sim->error);
    }
    fputs("</text>\n</svg>\n", out);
#undef ROW_Y
#undef X
}

/* ---- Chrome trace ----------------------------------------------------- */

/* Sim times are seconds (or unit costs); the trace counts microseconds. */
static double dur_us(const SchedSim *sim, int s, int pc)
{
    double d = (finite(sim->end[s][pc]) - finite(sim->start[s][pc])) * 1e6;
    return d > 0 ? d : 0;
}

/* Flow ids: for each send, the compute on the receiving stage that uses
 * what it sent (the forward of an activation, the backward of a
 * gradient). Channels are FIFO per (sender, receiver, kind), as in the
 * simulator, so the k-th send on one meets the k-th receive. out_id and
 * in_id are [stage][pc], 0 where there is no flow. */
static void match_flows(const SchedPlan *plan, const SchedSim *sim, int **out_id, int **in_id)
{
    int S = plan->stages;
    size_t nch = (size_t)S * S * 2;
    int *count = base_calloc(nch, sizeof *count), *off = base_calloc(nch + 1, sizeof *off);
    int *seq = base_calloc(nch, sizeof *seq);
#define CHAN(src, dst, g) (((size_t)(src) * S + (dst)) * 2 + (g))
    for (int s = 0; s < S; s++)
        for (int pc = 0; pc < plan->prog[s].n; pc++) {
            const SchedInstr *in = &plan->prog[s].ins[pc];
            if ((in->op == SCHED_RecvActivation || in->op == SCHED_RecvGrad) && in->peer >= 0 && in->peer < S)
                count[CHAN(in->peer, s, in->op == SCHED_RecvGrad)]++;
        }
    for (size_t c = 0; c < nch; c++)
        off[c + 1] = off[c] + count[c];
    int *recv_pc = base_calloc((size_t)off[nch], sizeof *recv_pc);
    for (int s = 0; s < S; s++)
        for (int pc = 0; pc < plan->prog[s].n; pc++) {
            const SchedInstr *in = &plan->prog[s].ins[pc];
            if ((in->op == SCHED_RecvActivation || in->op == SCHED_RecvGrad) && in->peer >= 0 && in->peer < S) {
                size_t c = CHAN(in->peer, s, in->op == SCHED_RecvGrad);
                recv_pc[off[c] + seq[c]++] = pc;
            }
        }
    memset(seq, 0, nch * sizeof *seq);
    int id = 0;
    for (int s = 0; s < S; s++)
        for (int pc = 0; pc < plan->prog[s].n; pc++) {
            const SchedInstr *in = &plan->prog[s].ins[pc];
            if (!is_send(in->op) || in->peer < 0 || in->peer >= S)
                continue;
            int grad = in->op == SCHED_SendGrad;
            size_t c = CHAN(s, in->peer, grad);
            int q = seq[c]++;
            if (q >= count[c] || !ran(sim, s, pc))
                continue;
            const SchedProgram *rp = &plan->prog[in->peer];
            int r = recv_pc[off[c] + q];
            const SchedInstr *rv = &rp->ins[r];
            for (int j = r + 1; j < rp->n; j++) {
                const SchedInstr *u = &rp->ins[j];
                int uses = grad ? (u->op == SCHED_Backward || u->op == SCHED_BackwardInput) : u->op == SCHED_Forward;
                if (uses && u->mb == rv->mb && u->chunk == rv->chunk) {
                    if (!in_id[in->peer][j] && ran(sim, in->peer, j)) {
                        out_id[s][pc] = in_id[in->peer][j] = ++id;
                    }
                    break;
                }
            }
        }
#undef CHAN
    free(count), free(off), free(seq), free(recv_pc);
}

void sched_emit_trace(FILE *out, const SchedPlan *plan, const SchedSim *sim, const char *title)
{
    int S = plan->stages;
    int **out_id = base_calloc(S, sizeof *out_id), **in_id = base_calloc(S, sizeof *in_id);
    for (int s = 0; s < S; s++) {
        out_id[s] = base_calloc(plan->prog[s].n, sizeof **out_id);
        in_id[s] = base_calloc(plan->prog[s].n, sizeof **in_id);
    }
    match_flows(plan, sim, out_id, in_id);

    fputs("{\"traceEvents\": [\n", out);
    fputs("{\"name\": \"process_name\", \"ph\": \"M\", \"pid\": 0, \"tid\": 0, \"args\": {\"name\": ", out);
    base_json_put_str(out, title);
    fputs("}}", out);
    /* A send that takes time (a link bandwidth in the cost model) runs
     * while its stage computes on, and complete events on one thread must
     * nest; so those sends get a thread of their own under the stage's. */
    int *wire = base_calloc(S, sizeof *wire);
    for (int s = 0; s < S; s++)
        for (int pc = 0; pc < plan->prog[s].n; pc++)
            if (is_send(plan->prog[s].ins[pc].op) && ran(sim, s, pc) && dur_us(sim, s, pc) > 0)
                wire[s] = 1;
    for (int s = 0; s < S; s++) {
        fprintf(out,
                ",\n{\"name\": \"thread_name\", \"ph\": \"M\", \"pid\": 0, \"tid\": %d, "
                "\"args\": {\"name\": \"stage %d\"}}",
                s, s);
        fprintf(out,
                ",\n{\"name\": \"thread_sort_index\", \"ph\": \"M\", \"pid\": 0, \"tid\": "
                "%d, \"args\": {\"sort_index\": %d}}",
                s, 2 * s);
        if (!wire[s])
            continue;
        fprintf(out,
                ",\n{\"name\": \"thread_name\", \"ph\": \"M\", \"pid\": 0, \"tid\": %d, "
                "\"args\": {\"name\": \"stage %d transfers\"}}",
                S + s, s);
        fprintf(out,
                ",\n{\"name\": \"thread_sort_index\", \"ph\": \"M\", \"pid\": 0, \"tid\": "
                "%d, \"args\": {\"sort_index\": %d}}",
                S + s, 2 * s + 1);
    }
    for (int s = 0; s < S; s++) {
        const SchedProgram *pr = &plan->prog[s];
        for (int pc = 0; pc < pr->n; pc++) {
            if (!ran(sim, s, pc))
                continue;
            const SchedInstr *in = &pr->ins[pc];
            const char *op = in->op < SCHED_NOPS ? sched_op_names[in->op] : "?";
            char name[32], text[160];
            if (is_collective(in->op))
                snprintf(name, sizeof name, "%s", op);
            else
                sched_instr_label(in, name, sizeof name);
            sched_instr_text(in, text, sizeof text);
            double ts = finite(sim->start[s][pc]) * 1e6, dur = dur_us(sim, s, pc);
            int tid = wire[s] && is_send(in->op) ? S + s : s;
            fputs(",\n{\"name\": ", out);
            base_json_put_str(out, name);
            fputs(", \"cat\": ", out);
            base_json_put_str(out, op);
            fprintf(out, ", \"ph\": \"X\", \"pid\": 0, \"tid\": %d, \"ts\": %.3f, \"dur\": %.3f", tid, ts, dur);
            /* Perfetto's flow binding on complete events: the arrow leaves
             * the send and enters the compute that waits for its data */
            if (out_id[s][pc])
                fprintf(out, ", \"bind_id\": \"0x%x\", \"flow_out\": true", out_id[s][pc]);
            if (in_id[s][pc])
                fprintf(out, ", \"bind_id\": \"0x%x\", \"flow_in\": true", in_id[s][pc]);
            fputs(", \"args\": {\"op\": ", out);
            base_json_put_str(out, op);
            fprintf(out, ", \"mb\": %d, \"chunk\": %d, \"buf\": %d, \"peer\": %d, \"pc\": %d, \"text\": ", (int)in->mb,
                    (int)in->chunk, (int)in->buf, (sched_op_operands[in->op] & SCHED_P) ? (int)in->peer : -1, pc);
            base_json_put_str(out, text);
            fputs("}}", out);
        }
    }
    fputs("\n],\n\"displayTimeUnit\": \"ms\",\n\"otherData\": {\"title\": ", out);
    base_json_put_str(out, title);
    fprintf(out, ", \"stages\": %d, \"micro_batches\": %d, \"chunks\": %d, \"verified\": %s", S, plan->micro_batches,
            plan->chunks, sim->ok ? "true" : "false");
    if (sim->ok)
        fprintf(out, ", \"step_time\": %.9g, \"bubble\": %.6f", finite(sim->step_time), finite(sim->bubble));
    else {
        fputs(", \"error\": ", out);
        base_json_put_str(out, sim->error);
    }
    fputs("}}\n", out);
    for (int s = 0; s < S; s++)
        free(out_id[s]), free(in_id[s]);
    free(out_id), free(in_id), free(wire);
}
