// Element access by dtype, through double: what the interpreter, the compiler's constant
// handling and the tests use to read and write arrays of any element type.
#include <string.h>

#include "kiln_runtime.h"

double kiln_element_get(const void *data, int dtype, int64_t i) {
  const unsigned char *p = (const unsigned char *)data + (size_t)i * kiln_rt_dtype_size(dtype);
  switch (dtype) {
    case KILN_RT_F32: {
      float v;
      memcpy(&v, p, 4);
      return v;
    }
    case KILN_RT_F64: {
      double v;
      memcpy(&v, p, 8);
      return v;
    }
    case KILN_RT_I8: return (double)*(const int8_t *)p;
    case KILN_RT_U8: return (double)*p;
    case KILN_RT_BOOL: return *p ? 1.0 : 0.0;
    case KILN_RT_I32: {
      int32_t v;
      memcpy(&v, p, 4);
      return v;
    }
    case KILN_RT_I64: {
      int64_t v;
      memcpy(&v, p, 8);
      return (double)v;
    }
    default: return 0.0;
  }
}

void kiln_element_set(void *data, int dtype, int64_t i, double v) {
  unsigned char *p = (unsigned char *)data + (size_t)i * kiln_rt_dtype_size(dtype);
  switch (dtype) {
    case KILN_RT_F32: {
      float x = (float)v;
      memcpy(p, &x, 4);
      break;
    }
    case KILN_RT_F64: memcpy(p, &v, 8); break;
    case KILN_RT_I8: *(int8_t *)p = (int8_t)v; break;
    case KILN_RT_U8: *p = (uint8_t)v; break;
    case KILN_RT_BOOL: *p = v != 0.0; break;
    case KILN_RT_I32: {
      int32_t x = (int32_t)v;
      memcpy(p, &x, 4);
      break;
    }
    case KILN_RT_I64: {
      int64_t x = (int64_t)v;
      memcpy(p, &x, 8);
      break;
    }
    default: break;
  }
}
