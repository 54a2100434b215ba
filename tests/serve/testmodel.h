/* testmodel.h — real (small, deterministic) model backends for the serve tests. Test code, not
 * product code: they stand in for the ONNX engine so the protocol layer can be tested end to end.
 *   "affine":  x DT_FLOAT [-1,4] -> logits = x W + b, probs = softmax(logits) (DT_FLOAT [-1,3]),
 *              class = argmax (DT_INT64 [-1]);  W[i][j] = 0.1*(i+1) - 0.2*j + 0.05*i*j, b[j] = 0.5 - 0.25*j
 *   "adder":   a, b DT_INT32 [-1] -> sum DT_INT32 [-1] (a + b, wrapping), two inputs
 *   "sleepy":  x DT_FLOAT [-1] -> y = x, after sleeping x[0] milliseconds (0..10000): for queue and
 *              shutdown tests
 *   "vision":  image DT_FLOAT [-1,1,4,4] with image preprocessing (GRAY, 4x4 stretch, area filter,
 *              scale 1/255, NCHW, at most 4 images of 4096 pixels) -> pixels DT_FLOAT [-1,16] = the
 *              preprocessed input as it reached the model */
#ifndef CLOISTER_TESTMODEL_H
#define CLOISTER_TESTMODEL_H

#include "cloister/serve.h"

/* Registers one of the four models by name as version `version`. */
int tm_register(cl_serve_registry *reg, const char *name, int64_t version, cl_err *err);
/* Registers the four models as version `version` (and "affine" also as version+1 when two_versions). */
int tm_register_all(cl_serve_registry *reg, int64_t version, bool two_versions, cl_err *err);
/* The affine model's weights, for tests that compute expected values. */
float tm_affine_w(int i, int j);
float tm_affine_b(int j);
/* The vision model's preprocessing declaration. */
extern const cl_image_spec tm_vision_image;
/* An 8-bit greyscale (channels 1) or RGB (channels 3) PNG of w x h pixels, malloc()ed; NULL on failure. */
uint8_t *tm_png(const uint8_t *px, uint32_t w, uint32_t h, int channels, size_t *len);

#endif
