// oneDNN 2-D convolutions (NHWC activations, HWIO kernels) as XLA FFI handlers for jax.ffi.
//
// Three handlers, one per pass of a training step: forward (x, w -> y), backward data
// (dy, w -> dx) and backward weights (x, dy -> dw, always float32). Attributes: stride (both
// axes) and explicit pads lo_h, hi_h, lo_w, hi_w, as lax.conv_general_dilated takes them.
// Activations stay in XLA's row-major NHWC (no reorders of the big tensors); only the small
// kernel is reordered per call to the layout oneDNN's kernel prefers (format_tag::any).
// Built by dnn_jax/kernels/build.py; loaded by dnn_jax/kernels/onednn.py.

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/c_api.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using dnnl::memory;
using tag = dnnl::memory::format_tag;

namespace {

enum Direction : int64_t { kForward = 0, kBackwardData = 1, kBackwardWeights = 2 };

// The shape of one convolution: n, h, w, c (input), kh, kw, f (kernel), oh, ow (output),
// stride, lo_h, hi_h, lo_w, hi_w.
struct Shape {
  int64_t n, h, w, c, kh, kw, f, oh, ow, stride, lo_h, hi_h, lo_w, hi_w;
};

using Key = std::vector<int64_t>;  // direction, dtype, then Shape's fields in order

// One cached primitive with what executing it needs besides the buffers.
struct Conv {
  dnnl::primitive prim;
  memory::desc act_in_md, act_out_md;  // nhwc: x or dy in, y or dx out (weights: x, dy)
  memory::desc user_w_md;  // HWIO as JAX holds it (float32 for the weights gradient)
  memory::desc prim_w_md;  // the layout the primitive chose for (diff_)weights
  bool reorder = false;  // prim_w_md differs from user_w_md
  dnnl::reorder w_reorder;  // user -> primitive (data passes), primitive -> user (weights)
  size_t scratch_bytes = 0;  // the larger of the primitive's and the reorder's scratchpad
  std::string impl;
};

dnnl::engine& Engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

memory::data_type DnnlType(ffi::DataType t) {
  switch (t) {
    case ffi::DataType::F32:
      return memory::data_type::f32;
    case ffi::DataType::BF16:
      return memory::data_type::bf16;
    default:
      return memory::data_type::undef;
  }
}

// A buffer per thread, grown as needed and kept: XLA calls handlers on its pool's long-lived
// threads, one call at a time per thread, so concurrent executions of one cached primitive
// never share a scratchpad (the reason for scratchpad_mode::user).
class Arena {
 public:
  ~Arena() { std::free(data_); }
  void* Get(size_t bytes) {
    if (bytes == 0) return nullptr;
    if (bytes > size_) {
      std::free(data_);
      size_ = (bytes + 63) / 64 * 64;
      data_ = std::aligned_alloc(64, size_);
      if (data_ == nullptr) {
        size_ = 0;
        throw std::bad_alloc();
      }
    }
    return data_;
  }

 private:
  void* data_ = nullptr;
  size_t size_ = 0;
};

thread_local Arena scratch_arena, weights_arena;

std::unique_ptr<Conv> MakeConv(Direction dir, memory::data_type dt, const Shape& s) {
  auto conv = std::make_unique<Conv>();
  auto& eng = Engine();
  const auto any = tag::any;
  memory::desc x_md({s.n, s.c, s.h, s.w}, dt, tag::nhwc);
  memory::desc y_md({s.n, s.f, s.oh, s.ow}, dt, tag::nhwc);
  memory::desc w_any({s.f, s.c, s.kh, s.kw}, dt, any);
  memory::dims strides{s.stride, s.stride}, pad_l{s.lo_h, s.lo_w}, pad_r{s.hi_h, s.hi_w};
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);  // concurrent executions stay safe
  attr.set_fpmath_mode(dnnl::fpmath_mode::strict);  // float32 stays float32, as XLA's
  auto fwd = dnnl::convolution_forward::primitive_desc(
      eng, dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct, x_md, w_any,
      y_md, strides, pad_l, pad_r, attr);
  size_t prim_scratch = 0;
  if (dir == kForward) {
    conv->prim = dnnl::convolution_forward(fwd);
    conv->act_in_md = x_md;
    conv->act_out_md = y_md;
    conv->prim_w_md = fwd.weights_desc();
    prim_scratch = fwd.scratchpad_desc().get_size();
    conv->impl = fwd.impl_info_str();
  } else if (dir == kBackwardData) {
    auto bwd = dnnl::convolution_backward_data::primitive_desc(
        eng, dnnl::algorithm::convolution_direct, x_md, w_any, y_md, strides, pad_l, pad_r, fwd,
        attr);
    conv->prim = dnnl::convolution_backward_data(bwd);
    conv->act_in_md = y_md;
    conv->act_out_md = x_md;
    conv->prim_w_md = bwd.weights_desc();
    prim_scratch = bwd.scratchpad_desc().get_size();
    conv->impl = bwd.impl_info_str();
  } else {
    // Float32 weights gradient for bfloat16 inputs too: oneDNN accumulates in float32, and
    // the caller rounds once, as lax.conv's preferred_element_type=float32 then astype does.
    memory::desc dw_any({s.f, s.c, s.kh, s.kw}, memory::data_type::f32, any);
    auto bwd = dnnl::convolution_backward_weights::primitive_desc(
        eng, dnnl::algorithm::convolution_direct, x_md, dw_any, y_md, strides, pad_l, pad_r, fwd,
        attr);
    // The jit 1x1 kernels' strided nhwc weights gradient writes past its reduce-to-unit-stride
    // buffer (oneDNN issue #6035: wrong results, hangs or crashes with fewer input channels
    // than a block, e.g. 2): take oneDNN's next implementation (jit:avx2, say) instead.
    while (s.stride > 1 && std::string(bwd.impl_info_str()).find("1x1") != std::string::npos) {
      if (!bwd.next_impl()) break;
    }
    conv->prim = dnnl::convolution_backward_weights(bwd);
    conv->act_in_md = x_md;  // src
    conv->act_out_md = y_md;  // diff_dst
    conv->prim_w_md = bwd.diff_weights_desc();
    prim_scratch = bwd.scratchpad_desc().get_size();
    conv->impl = bwd.impl_info_str();
  }
  auto user_dt = dir == kBackwardWeights ? memory::data_type::f32 : dt;
  conv->user_w_md = memory::desc({s.f, s.c, s.kh, s.kw}, user_dt, tag::hwio);
  conv->reorder = conv->prim_w_md != conv->user_w_md;
  size_t reorder_scratch = 0;
  if (conv->reorder) {
    bool to_user = dir == kBackwardWeights;
    const auto& from = to_user ? conv->prim_w_md : conv->user_w_md;
    const auto& to = to_user ? conv->user_w_md : conv->prim_w_md;
    auto pd = dnnl::reorder::primitive_desc(eng, from, eng, to, attr);
    conv->w_reorder = dnnl::reorder(pd);
    reorder_scratch = pd.scratchpad_desc().get_size();
  }
  conv->scratch_bytes = std::max(prim_scratch, reorder_scratch);
  return conv;
}

// Creating a primitive descriptor takes milliseconds: one per key, kept for the process.
const Conv& GetConv(Direction dir, memory::data_type dt, const Shape& s) {
  static std::mutex mu;
  static auto* cache = new std::map<Key, std::unique_ptr<Conv>>();  // never freed: no exit race
  Key key{dir, static_cast<int64_t>(dt), s.n, s.h, s.w, s.c, s.kh, s.kw, s.f,
          s.oh, s.ow, s.stride, s.lo_h, s.hi_h, s.lo_w, s.hi_w};
  std::lock_guard<std::mutex> lock(mu);
  auto& slot = (*cache)[key];
  if (!slot) slot = MakeConv(dir, dt, s);
  return *slot;
}

using Args = std::unordered_map<int, memory>;

// The scratchpad for one execution; oneDNN wants the argument left out when it needs none.
void AddScratchpad(const Conv& conv, Args* args) {
  if (conv.scratch_bytes == 0) return;
  memory::desc md({static_cast<int64_t>(conv.scratch_bytes)}, memory::data_type::u8, tag::x);
  args->emplace(DNNL_ARG_SCRATCHPAD, memory(md, Engine(), scratch_arena.Get(conv.scratch_bytes)));
}

struct Pads {
  int64_t stride, lo_h, hi_h, lo_w, hi_w;
};

// The Shape of a convolution from its NHWC input, HWIO kernel and NHWC output dimensions.
ffi::Error ShapeOf(ffi::AnyBuffer::Dimensions x, ffi::AnyBuffer::Dimensions w,
                   ffi::AnyBuffer::Dimensions y, const Pads& p, Shape* s) {
  if (x.size() != 4 || w.size() != 4 || y.size() != 4) {
    return ffi::Error::InvalidArgument(
        "dnn_jax oneDNN conv: expected NHWC input, HWIO kernel and NHWC output (rank 4)");
  }
  *s = Shape{x[0], x[1], x[2], x[3], w[0], w[1], w[3], y[1], y[2],
             p.stride, p.lo_h, p.hi_h, p.lo_w, p.hi_w};
  if (w[2] != x[3] || y[0] != x[0] || y[3] != w[3] || p.stride < 1) {
    return ffi::Error::InvalidArgument(
        "dnn_jax oneDNN conv: input, kernel and output shapes or the stride do not agree");
  }
  return ffi::Error::Success();
}

// dnnl::error, or std::bad_alloc from an Arena: nothing may unwind into XLA.
ffi::Error Failed(const char* pass, const std::exception& e) {
  return ffi::Error::Internal(std::string("dnn_jax oneDNN conv ") + pass + " failed: " +
                              e.what() + "; use Conv2D implementation='xla' to avoid oneDNN");
}

// Runs the forward or backward-data primitive: activation in, kernel, activation out.
ffi::Error RunData(Direction dir, const Shape& s, memory::data_type dt, void* act_in,
                   void* kernel, void* act_out) {
  const Conv& conv = GetConv(dir, dt, s);
  auto& eng = Engine();
  dnnl::stream stream(eng);
  memory w(conv.user_w_md, eng, kernel);
  if (conv.reorder) {
    memory prim_w(conv.prim_w_md, eng, weights_arena.Get(conv.prim_w_md.get_size()));
    Args args{{DNNL_ARG_FROM, w}, {DNNL_ARG_TO, prim_w}};
    AddScratchpad(conv, &args);
    conv.w_reorder.execute(stream, args);
    w = prim_w;
  }
  memory in(conv.act_in_md, eng, act_in), out(conv.act_out_md, eng, act_out);
  Args args{{DNNL_ARG_WEIGHTS, w}};
  args.emplace(dir == kForward ? DNNL_ARG_SRC : DNNL_ARG_DIFF_DST, in);
  args.emplace(dir == kForward ? DNNL_ARG_DST : DNNL_ARG_DIFF_SRC, out);
  AddScratchpad(conv, &args);
  conv.prim.execute(stream, args);
  stream.wait();
  return ffi::Error::Success();
}

ffi::Error ConvForwardImpl(ffi::AnyBuffer x, ffi::AnyBuffer w, ffi::Result<ffi::AnyBuffer> y,
                           int64_t stride, int64_t lo_h, int64_t hi_h, int64_t lo_w,
                           int64_t hi_w) {
  auto dt = DnnlType(x.element_type());
  if (dt == memory::data_type::undef || w.element_type() != x.element_type() ||
      y->element_type() != x.element_type()) {
    return ffi::Error::InvalidArgument(
        "dnn_jax oneDNN conv forward: input, kernel and output must all be float32 or bfloat16");
  }
  Shape s;
  if (auto err = ShapeOf(x.dimensions(), w.dimensions(), y->dimensions(),
                         {stride, lo_h, hi_h, lo_w, hi_w}, &s);
      err.failure()) {
    return err;
  }
  try {
    return RunData(kForward, s, dt, x.untyped_data(), w.untyped_data(), y->untyped_data());
  } catch (const std::exception& e) {
    return Failed("forward", e);
  }
}

ffi::Error ConvBackwardDataImpl(ffi::AnyBuffer dy, ffi::AnyBuffer w,
                                ffi::Result<ffi::AnyBuffer> dx, int64_t stride, int64_t lo_h,
                                int64_t hi_h, int64_t lo_w, int64_t hi_w) {
  auto dt = DnnlType(dy.element_type());
  if (dt == memory::data_type::undef || w.element_type() != dy.element_type() ||
      dx->element_type() != dy.element_type()) {
    return ffi::Error::InvalidArgument(
        "dnn_jax oneDNN conv backward data: dy, kernel and dx must all be float32 or bfloat16");
  }
  Shape s;
  if (auto err = ShapeOf(dx->dimensions(), w.dimensions(), dy.dimensions(),
                         {stride, lo_h, hi_h, lo_w, hi_w}, &s);
      err.failure()) {
    return err;
  }
  try {
    return RunData(kBackwardData, s, dt, dy.untyped_data(), w.untyped_data(),
                   dx->untyped_data());
  } catch (const std::exception& e) {
    return Failed("backward data", e);
  }
}

ffi::Error ConvBackwardWeightsImpl(ffi::AnyBuffer x, ffi::AnyBuffer dy,
                                   ffi::Result<ffi::AnyBuffer> dw, int64_t stride,
                                   int64_t lo_h, int64_t hi_h, int64_t lo_w, int64_t hi_w) {
  auto dt = DnnlType(x.element_type());
  if (dt == memory::data_type::undef || dy.element_type() != x.element_type() ||
      dw->element_type() != ffi::DataType::F32) {
    return ffi::Error::InvalidArgument(
        "dnn_jax oneDNN conv backward weights: x and dy must be float32 or bfloat16 (both), "
        "dw float32");
  }
  Shape s;
  if (auto err = ShapeOf(x.dimensions(), dw->dimensions(), dy.dimensions(),
                         {stride, lo_h, hi_h, lo_w, hi_w}, &s);
      err.failure()) {
    return err;
  }
  try {
    const Conv& conv = GetConv(kBackwardWeights, dt, s);
    auto& eng = Engine();
    dnnl::stream stream(eng);
    memory user_dw(conv.user_w_md, eng, dw->untyped_data());
    memory prim_dw = conv.reorder ? memory(conv.prim_w_md, eng,
                                           weights_arena.Get(conv.prim_w_md.get_size()))
                                  : user_dw;
    Args args{{DNNL_ARG_SRC, memory(conv.act_in_md, eng, x.untyped_data())},
              {DNNL_ARG_DIFF_DST, memory(conv.act_out_md, eng, dy.untyped_data())},
              {DNNL_ARG_DIFF_WEIGHTS, prim_dw}};
    AddScratchpad(conv, &args);
    conv.prim.execute(stream, args);
    if (conv.reorder) {  // after the gradient: both use the one scratchpad, in turn
      Args reorder_args{{DNNL_ARG_FROM, prim_dw}, {DNNL_ARG_TO, user_dw}};
      AddScratchpad(conv, &reorder_args);
      conv.w_reorder.execute(stream, reorder_args);
    }
    stream.wait();
    return ffi::Error::Success();
  } catch (const std::exception& e) {
    return Failed("backward weights", e);
  }
}

void Copy(const std::string& text, char* out, size_t out_len) {
  if (out == nullptr || out_len == 0) return;
  std::strncpy(out, text.c_str(), out_len - 1);
  out[out_len - 1] = '\0';
}

// The attributes every handler takes after its buffers, in the Impl functions' order.
template <typename Binding>
auto WithConvAttrs(Binding binding) {
  return std::move(binding)
      .template Attr<int64_t>("stride")
      .template Attr<int64_t>("lo_h")
      .template Attr<int64_t>("hi_h")
      .template Attr<int64_t>("lo_w")
      .template Attr<int64_t>("hi_w");
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(DnnJaxOnednnConvForward, ConvForwardImpl,
                              WithConvAttrs(ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()  // x
                                  .Arg<ffi::AnyBuffer>()  // w
                                  .Ret<ffi::AnyBuffer>()));  // y

XLA_FFI_DEFINE_HANDLER_SYMBOL(DnnJaxOnednnConvBackwardData, ConvBackwardDataImpl,
                              WithConvAttrs(ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()  // dy
                                  .Arg<ffi::AnyBuffer>()  // w
                                  .Ret<ffi::AnyBuffer>()));  // dx

XLA_FFI_DEFINE_HANDLER_SYMBOL(DnnJaxOnednnConvBackwardWeights, ConvBackwardWeightsImpl,
                              WithConvAttrs(ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()  // x
                                  .Arg<ffi::AnyBuffer>()  // dy
                                  .Ret<ffi::AnyBuffer>()));  // dw (float32)

extern "C" {

// The implementation oneDNN picks for one pass (0 forward, 1 backward data, 2 backward
// weights) of a convolution, e.g. "brg:avx2" or "ref:any", written to out; the primitive is
// cached for later calls. dims: n, h, w, c, kh, kw, f, stride, lo_h, hi_h, lo_w, hi_w.
// Returns 0, or 1 with the error message in out.
int DnnJaxOnednnImplInfo(int64_t direction, int64_t bfloat16, const int64_t* dims, char* out,
                         size_t out_len) {
  try {
    Shape s{dims[0], dims[1], dims[2], dims[3], dims[4], dims[5], dims[6], 0, 0,
            dims[7], dims[8], dims[9], dims[10], dims[11]};
    s.oh = (s.h + s.lo_h + s.hi_h - s.kh) / s.stride + 1;
    s.ow = (s.w + s.lo_w + s.hi_w - s.kw) / s.stride + 1;
    auto dt = bfloat16 ? memory::data_type::bf16 : memory::data_type::f32;
    Copy(GetConv(static_cast<Direction>(direction), dt, s).impl, out, out_len);
    return 0;
  } catch (const std::exception& e) {  // dnnl::error among them
    Copy(e.what(), out, out_len);
    return 1;
  }
}

// dnnl::get_effective_cpu_isa(): the widest instruction set oneDNN uses on this CPU.
const char* DnnJaxOnednnCpuIsa() {
  switch (dnnl::get_effective_cpu_isa()) {
    case dnnl::cpu_isa::sse41:
      return "sse41";
    case dnnl::cpu_isa::avx:
      return "avx";
    case dnnl::cpu_isa::avx2:
      return "avx2";
    case dnnl::cpu_isa::avx2_vnni:
      return "avx2_vnni";
    case dnnl::cpu_isa::avx2_vnni_2:
      return "avx2_vnni_2";
    case dnnl::cpu_isa::avx512_core:
      return "avx512_core";
    case dnnl::cpu_isa::avx512_core_vnni:
      return "avx512_core_vnni";
    case dnnl::cpu_isa::avx512_core_bf16:
      return "avx512_core_bf16";
    case dnnl::cpu_isa::avx512_core_fp16:
      return "avx512_core_fp16";
    case dnnl::cpu_isa::avx512_core_amx:
      return "avx512_core_amx";
    case dnnl::cpu_isa::avx512_core_amx_fp16:
      return "avx512_core_amx_fp16";
    default:
      return "default";
  }
}

// oneDNN's version, e.g. "3.2.0".
const char* DnnJaxOnednnVersion() {
  static const std::string version = [] {
    const dnnl_version_t* v = dnnl::version();
    return std::to_string(v->major) + "." + std::to_string(v->minor) + "." +
           std::to_string(v->patch);
  }();
  return version.c_str();
}

}  // extern "C"
