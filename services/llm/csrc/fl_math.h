/* Shared by the replica's kernels: a vectorisable expf. */
#ifndef FL_MATH_H
#define FL_MATH_H

#include <math.h>
#include <stdint.h>
#include <string.h>

/* expf by Cephes' polynomial after range reduction (about 1 ulp): branch-free arithmetic the compiler turns
 * into vector code (an `if` or a union kept the loop scalar, and libm's expf per score cost more than the dot
 * products). The argument is a score minus its row's maximum, so x <= 0. */
static inline float fl_expf(float x) {
    x = x > -87.0f ? x : -87.0f;
    const float fn = floorf(x * 1.44269504088896341f + 0.5f);
    x = x - fn * 0.693359375f - fn * -2.12194440e-4f;
    float y = 1.9875691500e-4f;
    y = y * x + 1.3981999507e-3f;
    y = y * x + 8.3334519073e-3f;
    y = y * x + 4.1665795894e-2f;
    y = y * x + 1.6666665459e-1f;
    y = y * x + 5.0000001201e-1f;
    y = y * x * x + x + 1.0f;
    const int32_t bits = ((int32_t)fn + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return y * scale;
}

#endif
