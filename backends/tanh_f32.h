// The f32 tanh both backends render (emit_c.c's kiln_gen_tanhf, llvm_emit.c's tanh_f32; the
// accuracy argument is in emit_c.c): q(r) = exp(r) - 1 ~ r (1 + r (c2 + r (c3 + ... + r c10)))
// on |r| <= ln2 / 2, minimax for the relative error (< 2e-15; tools/tanh_poly.py computes it).
// The coefficients c10 .. c2, then 1, in Horner order.
#ifndef KILN_TANH_F32_H
#define KILN_TANH_F32_H

static const double tanh_expm1_poly[] = {2.7734829240799124e-07, 2.763365612342923e-06,
                                         2.480126448012854e-05,  0.00019841189626895807,
                                         0.0013888889095803674,  0.008333333366578731,
                                         0.041666666666223484,   0.16666666666623814,
                                         0.5000000000000017,     1.0};

#endif
