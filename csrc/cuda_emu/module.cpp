// The Python module lenetalex._emu: importing it registers the CUDA entries
// (csrc/cuda, compiled by the host compiler) as the CPU kernels of
// torch.ops.lenetalex_emu.*, with the schemas of csrc/ops. Its functions set
// and report the emulator's schedule. Python.h alone keeps it cheap to compile.
#include <Python.h>

#include <exception>
#include <string>

#include "cuda_emu/runtime.h"

static const char* const kScheduleNames[] = {"forward", "reverse", "random"};

static PyObject* set_schedule(PyObject*, PyObject* args) {
  const char* name = nullptr;
  unsigned long long seed = 0;
  if (!PyArg_ParseTuple(args, "s|K", &name, &seed)) return nullptr;
  for (int i = 0; i < 3; ++i) {
    if (std::string(name) == kScheduleNames[i]) {
      cuda_emu::set_schedule(cuda_emu::Schedule(i), seed);
      Py_RETURN_NONE;
    }
  }
  PyErr_Format(PyExc_ValueError, "schedule must be 'forward', 'reverse' or 'random', got '%s'",
               name);
  return nullptr;
}

static PyObject* get_schedule(PyObject*, PyObject*) {
  uint64_t seed = 0;
  try {
    const cuda_emu::Schedule s = cuda_emu::schedule(&seed);
    return Py_BuildValue("(sK)", kScheduleNames[int(s)], (unsigned long long)seed);
  } catch (const std::exception& e) {  // a bad LENETALEX_EMU_SCHEDULE
    PyErr_SetString(PyExc_ValueError, e.what());
    return nullptr;
  }
}

static PyObject* is_asan(PyObject*, PyObject*) {
#if defined(__SANITIZE_ADDRESS__)
  Py_RETURN_TRUE;
#else
  Py_RETURN_FALSE;
#endif
}

static PyMethodDef methods[] = {
    {"set_schedule", set_schedule, METH_VARARGS,
     "set_schedule(name, seed=0): the order fibers run in: forward, reverse or random."},
    {"schedule", get_schedule, METH_NOARGS, "(name, seed) of the current schedule."},
    {"asan", is_asan, METH_NOARGS, "Whether this build runs under AddressSanitizer."},
    {nullptr, nullptr, 0, nullptr}};

static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_emu", nullptr, -1, methods};

extern "C" PyMODINIT_FUNC PyInit__emu(void) { return PyModule_Create(&module_def); }
