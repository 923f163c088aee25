/* The feature tracker's two float recursions, compiled: the batch path's twin of
 * detectors/features.py's _loss_core and _gn_core.
 *
 * Why: folded in Python, these two loops are half of the service's CPU per record in batches of
 * 1,000 (bench/results/ingest.md). The Python loops stay the reference (the one-record path runs
 * them, and the batch path does when this module is not built); these are the same operations in
 * the same order on IEEE doubles, so both give the same floats to the bit (tests/test_recursions.py
 * compares them on random and adversarial sequences). Keep the two in step: a change to one is a
 * change to the other. Built with -ffp-contract=off: a fused multiply-add would round differently.
 *
 * No numpy C API: the inputs and the output columns are buffers the caller allocates.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#define LOSS_FLOATS 8 /* fast, slow, sd, nsd, trend, pbest, alt, amp */
#define LOSS_INTS 2   /* pstep, pnl */


static int get_buffer(PyObject *obj, Py_buffer *view, const char *fmt, Py_ssize_t itemsize, int writable,
                      Py_ssize_t n, const char *what) {
    if (PyObject_GetBuffer(obj, view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0)) < 0)
        return -1;
    /* fmt: the accepted type codes ("d"; "ql": numpy's int64 is 'l' where long has 64 bits) */
    if (view->itemsize != itemsize || view->format == NULL || strchr(fmt, view->format[strlen(view->format) - 1]) == NULL ||
        (n >= 0 && view->len != n * itemsize)) {
        PyErr_Format(PyExc_ValueError, "%s: expected %zd contiguous values of type '%s'", what, n, fmt);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

PyDoc_STRVAR(loss_fold_doc,
"loss_fold(params, state, xs, steps, out_f, out_i) -> state\n\n"
"features._loss_core over the float64 buffer xs at the int64 buffer steps. params: (alpha_fast,\n"
"alpha_slow, alpha_trend, alpha_osc, win_k, win_r, plateau_eps, SECOND_DIFF_SCALE); state: (nl, lprev, lp2, fast,\n"
"slow, sd, nsd, trend, pbest, pstep, pnl, alt, amp, dlast); out_f: float64 (8, k) for fast, slow,\n"
"sd, nsd, trend, pbest, alt, amp; out_i: int64 (2, k) for pstep, pnl. Returns the new state.");

static PyObject *loss_fold(PyObject *self, PyObject *args) {
    double af, as_, at, ao, wk, wr, peps, sdiff;
    long long nl, pstep, pnl;
    double lprev, lp2, fast, slow, sd, nsd, trend, pbest, alt, amp, dlast;
    PyObject *xs_o, *steps_o, *outf_o, *outi_o;
    if (!PyArg_ParseTuple(args, "(dddddddd)(LddddddddLLddd)OOOO", &af, &as_, &at, &ao, &wk, &wr, &peps, &sdiff, &nl, &lprev,
                          &lp2, &fast, &slow, &sd, &nsd, &trend, &pbest, &pstep, &pnl, &alt, &amp, &dlast, &xs_o,
                          &steps_o, &outf_o, &outi_o))
        return NULL;
    Py_buffer xv, sv, fv, iv;
    if (get_buffer(xs_o, &xv, "d", 8, 0, -1, "xs") < 0)
        return NULL;
    Py_ssize_t k = xv.len / 8;
    if (get_buffer(steps_o, &sv, "ql", 8, 0, k, "steps") < 0) {
        PyBuffer_Release(&xv);
        return NULL;
    }
    if (get_buffer(outf_o, &fv, "d", 8, 1, LOSS_FLOATS * k, "out_f") < 0) {
        PyBuffer_Release(&xv);
        PyBuffer_Release(&sv);
        return NULL;
    }
    if (get_buffer(outi_o, &iv, "ql", 8, 1, LOSS_INTS * k, "out_i") < 0) {
        PyBuffer_Release(&xv);
        PyBuffer_Release(&sv);
        PyBuffer_Release(&fv);
        return NULL;
    }
    const double *xs = (const double *)xv.buf;
    const int64_t *steps = (const int64_t *)sv.buf;
    double *of = (double *)fv.buf;
    int64_t *oi = (int64_t *)iv.buf;
    double pfloor = pbest - peps * (pbest >= 0.0 ? pbest : -pbest);
    for (Py_ssize_t i = 0; i < k; i++) {
        double x = xs[i];
        int64_t s = steps[i];
        if (nl == 0) {
            fast = slow = trend = pbest = x;
            pfloor = pbest - peps * (pbest >= 0.0 ? pbest : -pbest);
            sd = nsd = 0.0;
            pstep = s;
            pnl = 1;
        } else {
            fast += af * (x - fast);
            double cap = wk * sd + wr * (slow >= 0.0 ? slow : -slow);
            double held = x > lprev ? x : lprev;
            if (slow - held > cap && held > 0.0) {
                nsd *= held / slow;
                sd *= held / slow;
                slow = held;
                cap = wk * sd + wr * slow;
            }
            double d = x - slow;
            if (d > cap)
                d = cap;
            slow += as_ * d;
            sd += as_ * ((d >= 0.0 ? d : -d) - sd);
            double dl = x - lprev;
            double e = lp2 == lp2 ? (dl - lprev + lp2) * sdiff : dl;
            if (e < 0.0)
                e = -e;
            nsd += as_ * ((e > cap ? cap : e) - nsd);
            double dt = x - trend;
            if (dt > cap)
                dt = cap;
            trend += at * dt;
            if (trend < pfloor) {
                pbest = trend;
                pfloor = pbest - peps * (pbest >= 0.0 ? pbest : -pbest);
                pstep = s;
                pnl = nl + 1;
            }
            if (dl > 0.0) {
                alt += ao * ((dlast < 0.0 ? 1.0 : 0.0) - alt);
                dlast = dl;
                amp += ao * (dl - amp);
            } else if (dl < 0.0) {
                alt += ao * ((dlast > 0.0 ? 1.0 : 0.0) - alt);
                dlast = dl;
                amp += ao * (-dl - amp);
            } else {
                amp += ao * (0.0 - amp);
            }
        }
        nl += 1;
        lp2 = lprev;
        lprev = x;
        of[i] = fast;
        of[k + i] = slow;
        of[2 * k + i] = sd;
        of[3 * k + i] = nsd;
        of[4 * k + i] = trend;
        of[5 * k + i] = pbest;
        of[6 * k + i] = alt;
        of[7 * k + i] = amp;
        oi[i] = pstep;
        oi[k + i] = pnl;
    }
    PyBuffer_Release(&xv);
    PyBuffer_Release(&sv);
    PyBuffer_Release(&fv);
    PyBuffer_Release(&iv);
    return Py_BuildValue("(LddddddddLLddd)", nl, lprev, lp2, fast, slow, sd, nsd, trend, pbest, pstep, pnl, alt, amp,
                         dlast);
}

PyDoc_STRVAR(gn_fold_doc,
"gn_fold(params, state, gs, out) -> state\n\n"
"features._gn_core over the float64 buffer gs (finite, non-negative). params: (alpha_g, TINY,\n"
"LOG_TINY, LOG_CLIP, LN2); state: (ng, mu, var);\n"
"out: float64 (2, k) for mu, var. Returns the new state.");

static PyObject *gn_fold(PyObject *self, PyObject *args) {
    double ag, tiny, log_tiny, log_clip, ln2, mu, var;
    long long ng;
    PyObject *gs_o, *out_o;
    if (!PyArg_ParseTuple(args, "(ddddd)(Ldd)OO", &ag, &tiny, &log_tiny, &log_clip, &ln2, &ng, &mu, &var, &gs_o,
                          &out_o))
        return NULL;
    Py_buffer gv, ov;
    if (get_buffer(gs_o, &gv, "d", 8, 0, -1, "gs") < 0)
        return NULL;
    Py_ssize_t k = gv.len / 8;
    if (get_buffer(out_o, &ov, "d", 8, 1, 2 * k, "out") < 0) {
        PyBuffer_Release(&gv);
        return NULL;
    }
    const double *gs = (const double *)gv.buf;
    double *out = (double *)ov.buf;
    double keep = 1.0 - ag;
    for (Py_ssize_t i = 0; i < k; i++) {
        double g = gs[i];
        double lg = g > tiny ? log(g) : log_tiny;
        if (lg > log_clip)
            lg = log_clip;
        if (ng == 0) {
            mu = lg;
            var = 0.0;
        } else {
            double d = lg - mu;
            if (d > ln2) {
                double cap = 3.0 * sqrt(var) + ln2;
                if (d > cap)
                    d = cap;
            }
            mu += ag * d;
            var = keep * (var + ag * d * d);
        }
        ng += 1;
        out[i] = mu;
        out[k + i] = var;
    }
    PyBuffer_Release(&gv);
    PyBuffer_Release(&ov);
    return Py_BuildValue("(Ldd)", ng, mu, var);
}

static PyMethodDef methods[] = {
    {"loss_fold", loss_fold, METH_VARARGS, loss_fold_doc},
    {"gn_fold", gn_fold, METH_VARARGS, gn_fold_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_recursions",
    "The feature tracker's float recursions, compiled (the batch path's twin of features._loss_core "
    "and features._gn_core).",
    -1, methods,
};

PyMODINIT_FUNC PyInit__recursions(void) { return PyModule_Create(&module); }
