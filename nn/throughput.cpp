// Peak FLOP/s of NVIDIA's data-centre GPUs (datasheets, dense: the sparse figures halved).
#include "nn/throughput.h"

namespace mlai::nn {

PeakDtype peak_dtype(const std::string& precision, const std::string& float32_matmul_precision) {
  if (precision == "16") return PeakDtype::kFloat16;
  if (precision == "bf16") return PeakDtype::kBFloat16;
  return float32_matmul_precision == "highest" ? PeakDtype::kFloat32 : PeakDtype::kTf32;
}

namespace {
struct Peaks {
  double fp32, tf32, fp16, bf16;  // TFLOP/s; tf32 0: none (float32 GEMMs run in float32)
};

bool has(const std::string& s, const char* part) { return s.find(part) != std::string::npos; }

// `word` as a whole word of the name: "NVIDIA L4" has L4, "NVIDIA L40S" does not.
bool has_word(const std::string& s, const std::string& word) {
  for (size_t at = s.find(word); at != std::string::npos; at = s.find(word, at + 1)) {
    const size_t end = at + word.size();
    const bool starts = at == 0 || s[at - 1] == ' ' || s[at - 1] == '-';
    const bool ends = end == s.size() || s[end] == ' ' || s[end] == '-';
    if (starts && ends) return true;
  }
  return false;
}

// Checked in this order: the more specific names first.
bool known(const std::string& n, Peaks& p) {
  const Peaks hopper_sxm{67, 494.5, 989.5, 989.5}, hopper_nvl{60, 417.5, 835.5, 835.5};
  if (has(n, "GH200"))
    p = hopper_sxm;
  else if (has(n, "H200"))
    p = has(n, "NVL") ? hopper_nvl : hopper_sxm;
  else if (has(n, "H100") && (has(n, "PCIe") || has(n, "PCIE")))
    p = {51, 378, 756.5, 756.5};
  else if (has(n, "H100"))
    p = has(n, "NVL") ? hopper_nvl : hopper_sxm;
  else if (has(n, "A100"))
    p = {19.5, 156, 312, 312};
  else if (has_word(n, "L40S"))
    p = {91.6, 183, 362, 362};
  else if (has_word(n, "L4"))
    p = {30.3, 60, 121, 121};
  else if (has_word(n, "A10"))
    p = {31.2, 62.5, 125, 125};
  else if (has(n, "V100S"))
    p = {16.4, 0, 130, 0};
  else if (has(n, "V100") && has(n, "SXM"))
    p = {15.7, 0, 125, 0};
  else if (has(n, "V100"))
    p = {14, 0, 112, 0};
  else
    return false;
  return true;
}
}  // namespace

double peak_flops(const std::string& device_name, PeakDtype dt) {
  Peaks p{};
  if (!known(device_name, p)) return 0;
  switch (dt) {
    case PeakDtype::kFloat32:
      return p.fp32 * 1e12;
    case PeakDtype::kTf32:
      return (p.tf32 > 0 ? p.tf32 : p.fp32) * 1e12;
    case PeakDtype::kFloat16:
      return p.fp16 * 1e12;
    case PeakDtype::kBFloat16:
      return p.bf16 * 1e12;
  }
  return 0;
}

}  // namespace mlai::nn
