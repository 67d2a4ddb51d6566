// The Python module lenetalex._C. It holds no bindings of its own: importing it
// loads the shared library, whose static initializers register the
// torch.ops.lenetalex.* schemas and kernels with the dispatcher. It only reports
// what the binary was compiled with, for lenetalex.build_info(), and which CPU
// kernel variant runs (cpu_isa.h).
// Python.h alone keeps this file cheap to compile (no torch/extension.h).
#include <Python.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "cpu_isa.h"

#ifndef LENETALEX_VERSION
#define LENETALEX_VERSION "unknown"
#endif

static PyObject* compiled_flags(PyObject*, PyObject*) {
#ifdef LENETALEX_WITH_CUDA
  PyObject* cuda = Py_True;
  const char* archs = LENETALEX_CUDA_ARCHS;
#else
  PyObject* cuda = Py_False;
  const char* archs = "";
#endif
#if defined(_OPENMP)
  PyObject* openmp = Py_True;
#else
  PyObject* openmp = Py_False;
#endif
  return Py_BuildValue("{s:s,s:O,s:s,s:O}", "version", LENETALEX_VERSION, "cuda_compiled", cuda,
                       "cuda_archs", archs, "openmp", openmp);
}

namespace isa = lenetalex::cpu_isa;

// Runs f, turning the C++ exceptions of cpu_isa into Python's.
template <typename F>
static PyObject* isa_call(F f) {
  try {
    return f();
  } catch (const std::invalid_argument& e) {
    PyErr_SetString(PyExc_ValueError, e.what());
  } catch (const std::exception& e) {
    PyErr_SetString(PyExc_RuntimeError, e.what());
  }
  return nullptr;
}

static PyObject* cpu_isa(PyObject*, PyObject*) {
  return isa_call([] { return PyUnicode_FromString(isa::name(isa::active())); });
}

static PyObject* set_cpu_isa(PyObject*, PyObject* arg) {
  const char* request = PyUnicode_AsUTF8(arg);
  if (!request) return nullptr;
  return isa_call([&] {
    isa::activate(request, "cpu_isa");
    return PyUnicode_FromString(isa::name(isa::active()));
  });
}

// [(name, compiled, supported)] for every variant, best last.
static PyObject* cpu_isa_variants(PyObject*, PyObject*) {
  PyObject* out = PyList_New(isa::kVariants);
  for (int i = 0; out && i < isa::kVariants; ++i)
    PyList_SET_ITEM(out, i,
                    Py_BuildValue("(sOO)", isa::name(i), isa::compiled(i) ? Py_True : Py_False,
                                  isa::supported(i) ? Py_True : Py_False));
  return out;
}

// The selection rule on made-up facts: choose_cpu_isa(request, compiled,
// supported), both sequences of kVariants bools; the variant's name or the
// error active() would raise.
static PyObject* choose_cpu_isa(PyObject*, PyObject* args) {
  const char* request;
  PyObject *c_seq, *s_seq;
  if (!PyArg_ParseTuple(args, "sOO", &request, &c_seq, &s_seq)) return nullptr;
  bool c[isa::kVariants], s[isa::kVariants];
  for (int i = 0; i < isa::kVariants; ++i) {
    PyObject* ci = PySequence_GetItem(c_seq, i);
    PyObject* si = ci ? PySequence_GetItem(s_seq, i) : nullptr;
    const int cv = ci ? PyObject_IsTrue(ci) : -1, sv = si ? PyObject_IsTrue(si) : -1;
    Py_XDECREF(ci);
    Py_XDECREF(si);
    if (cv < 0 || sv < 0) return nullptr;
    c[i] = cv, s[i] = sv;
  }
  std::string error;
  bool invalid = false;
  const int chosen = isa::choose(request, c, s, "LENETALEX_CPU_ISA", &error, &invalid);
  if (chosen >= 0) return PyUnicode_FromString(isa::name(chosen));
  PyErr_SetString(invalid ? PyExc_ValueError : PyExc_RuntimeError, error.c_str());
  return nullptr;
}

// peak_fma_flops(iters): float32 FLOP/s of the active variant's multiply-adds
// on every intra-op thread (cpu/peak_fma.cpp), for the bench's compute limit.
static PyObject* peak_fma_flops(PyObject*, PyObject* arg) {
  const long long iters = PyLong_AsLongLong(arg);
  if (iters == -1 && PyErr_Occurred()) return nullptr;
  return isa_call([&] {
    const auto fn = reinterpret_cast<double (*)(int64_t)>(isa::kernel(isa::Op::peak_fma_flops));
    PyThreadState* saved = PyEval_SaveThread();  // other Python threads may run meanwhile
    const double flops = fn(iters);                // does not throw
    PyEval_RestoreThread(saved);
    return PyFloat_FromDouble(flops);
  });
}

static PyMethodDef methods[] = {
    {"compiled_flags", compiled_flags, METH_NOARGS, "What this binary was compiled with."},
    {"cpu_isa", cpu_isa, METH_NOARGS, "The CPU kernel variant in use."},
    {"set_cpu_isa", set_cpu_isa, METH_O, "Switch the CPU kernels to a variant ('auto' or a name)."},
    {"cpu_isa_variants", cpu_isa_variants, METH_NOARGS, "[(name, compiled, supported)]."},
    {"peak_fma_flops", peak_fma_flops, METH_O, "FLOP/s of the active variant's FMAs."},
    {"_choose_cpu_isa", choose_cpu_isa, METH_VARARGS, "The selection rule, on given facts."},
    {nullptr, nullptr, 0, nullptr}};

static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, methods};

extern "C" PyMODINIT_FUNC PyInit__C(void) { return PyModule_Create(&module_def); }
