// A minimal TensorBoard event-file writer for scalars, histograms, images and hyperparameters,
// with
// no protobuf dependency: TFRecord
// framing with masked CRC32C, and the few Event/Summary protobuf fields encoded by hand.
// Files are named events.out.tfevents.<unix seconds>.<hostname> as TensorBoard expects.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <variant>
#include <vector>

namespace mlai::io {

// CRC32C (Castagnoli, reflected polynomial 0x82F63B78), as used by TFRecord.
uint32_t crc32c(const void* data, size_t n);
// TFRecord's masked CRC: rotate right by 15 and add 0xa282ead8.
uint32_t masked_crc32c(const void* data, size_t n);

// Seconds since the Unix epoch, with sub-second resolution.
double unix_time_now();

// Protobuf bytes of one Event{wall_time, step, summary{value{tag, simple_value}}}; exposed so
// tests can check the encoding.
std::string encode_scalar_event(const std::string& tag, float value, int64_t step,
                                double wall_time);
// A histogram as TensorBoard's HistogramProto stores it: the values' min, max, count, sum and
// sum of squares, and counts per bucket, bucket i holding the values in [limits[i-1],
// limits[i]) (the first from min). The buckets are TensorFlow's default ones (edges at 0 and at
// +-1e-12 x 1.1^k up to 1e20, so about 10% wide at any magnitude); only those from the first to
// the last non-empty are kept, and a run of empty ones is merged into one.
struct Histogram {
  double min = 0, max = 0, num = 0, sum = 0, sum_squares = 0;
  std::vector<double> limits, counts;
};
// Non-finite values are left out (counted in none of the fields).
Histogram make_histogram(const float* values, size_t n);
// Protobuf bytes of one Event{wall_time, step, summary{value{tag, histo}}}.
std::string encode_histogram_event(const std::string& tag, const Histogram& h, int64_t step,
                                   double wall_time);
// Protobuf bytes of one Event{wall_time, step, summary{value{tag, image}}}: an encoded (PNG)
// image of height x width with 1 (gray) or 3 (RGB) channels.
std::string encode_image_event(const std::string& tag, const std::string& png, int64_t height,
                               int64_t width, int channels, int64_t step, double wall_time);
// One hyperparameter of a run for TensorBoard's HPARAMS tab: a number, a bool or a string.
struct HParam {
  std::string name;
  std::variant<double, bool, std::string> value;
};
// Protobuf bytes of the HParams plugin's session-start Event: the run's hyperparameters, as
// torch.utils.tensorboard's add_hparams and Lightning's TensorBoardLogger log them. No
// experiment summary: TensorBoard then builds the experiment from every run's session (all
// hyperparameters, the values each took, and the runs' scalar tags as metric columns).
std::string encode_hparams_start_event(const std::vector<HParam>& hparams, double wall_time);
// The session's end: TensorBoard shows the run's status (success or failure).
std::string encode_hparams_end_event(bool success, double wall_time);
// One TFRecord: uint64 length, masked CRC of the length, data, masked CRC of the data.
std::string frame_tfrecord(const std::string& data);

class EventWriter {
 public:
  // Creates log_dir (and parents) if missing and opens a new event file in it; if a file of
  // that name exists (two writers in the same second) a numeric suffix is added.
  explicit EventWriter(const std::string& log_dir);
  ~EventWriter();  // flushes and closes; never throws
  EventWriter(const EventWriter&) = delete;
  EventWriter& operator=(const EventWriter&) = delete;

  void add_scalar(const std::string& tag, float value, int64_t step,
                  double wall_time = unix_time_now());
  // TensorBoard's HISTOGRAMS and DISTRIBUTIONS tabs (add_histogram).
  void add_histogram(const std::string& tag, const std::vector<float>& values, int64_t step,
                     double wall_time = unix_time_now());
  // TensorBoard's IMAGES tab (add_image): a PNG file's bytes and its size.
  void add_image(const std::string& tag, const std::string& png, int64_t height, int64_t width,
                 int channels, int64_t step, double wall_time = unix_time_now());
  // TensorBoard's HPARAMS tab: this run's hyperparameters (once, at its start), and its end.
  void add_hparams(const std::vector<HParam>& hparams, double wall_time = unix_time_now());
  void end_hparams_session(bool success, double wall_time = unix_time_now());
  // Data reaches the OS only on flush() (or destruction): call it once per epoch or log interval
  // so a live TensorBoard sees progress.
  void flush();
  const std::string& path() const { return path_; }

 private:
  void write_record(const std::string& data);

  std::string path_;
  std::FILE* file_ = nullptr;
};

}  // namespace mlai::io
