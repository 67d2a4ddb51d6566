// The Python module lenetalex._C. It holds no bindings of its own: importing it
// loads the shared library, whose static initializers register the
// torch.ops.lenetalex.* schemas and kernels with the dispatcher. It only reports
// what the binary was compiled with, for lenetalex.build_info().
// Python.h alone keeps this file cheap to compile (no torch/extension.h).
#include <Python.h>

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

static PyMethodDef methods[] = {
    {"compiled_flags", compiled_flags, METH_NOARGS, "What this binary was compiled with."},
    {nullptr, nullptr, 0, nullptr}};

static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, methods};

extern "C" PyMODINIT_FUNC PyInit__C(void) { return PyModule_Create(&module_def); }
