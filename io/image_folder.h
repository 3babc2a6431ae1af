// Image files in torchvision's ImageFolder layout (ROOT/<class>/<image>.png|.jpg, classes
// sorted by name): packed into mlai's HDF5 format (mlai_convert --from folder), or read as they
// are, each image decoded by the loader's workers when a batch needs it (mlai_train --dataset
// folder). Both give the same bytes for an image.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "io/dataset.h"
#include "io/h5dataset.h"

namespace mlai::io {

struct ImageFolder {
  std::string root;
  std::vector<std::string> class_names;  // the class folders' names, sorted
  std::vector<std::string> files;        // class by class, in torchvision's order
  std::vector<int64_t> labels;           // index into class_names (or the given classes)
  std::vector<std::string> skipped;      // files that are not .png/.jpg/.jpeg
};

// The .png/.jpg/.jpeg files under dir at any depth, in ImageFolder's order (folder by folder,
// by name within a folder); names starting with '.' are ignored, other files are appended to
// `skipped` when given.
std::vector<std::string> list_image_files(const std::string& dir,
                                          std::vector<std::string>* skipped = nullptr);

// Lists root's images as torchvision's ImageFolder does: each subfolder is a class (sorted by
// name, its position the label), holding images at any depth, ordered folder by folder and by
// name within a folder. Names starting with '.' are ignored. With `classes` (a training
// split's), the labels are positions in it and every class folder must be one of them. Throws
// naming root when it has no class folders, a class folder has no images, or a class is
// unknown.
ImageFolder scan_image_folder(const std::string& root,
                              const std::vector<std::string>& classes = {});

// Where a folder data set's splits are: DIR/train and DIR/test (or DIR/val) when DIR has a
// train folder; otherwise DIR is the training split and there is no test split ("").
struct FolderSplits {
  std::string train, test;
};
FolderSplits image_folder_splits(const std::string& dir);

struct PackOptions {
  int64_t height = 0, width = 0;  // resize every image to this (PIL's bilinear); 0: keep the
                                  // images' own size, which they must all share
  int channels = 0;               // 1 or 3; 0: 3 if any image is in colour, else 1
  int compression = 0;            // gzip level of the images
  const char* size_flag = "--size";  // the option that sets the size, for errors
};

// `o` with what it leaves open (0) learnt from the headers of f's files: the channels (3 if any
// image is in colour, else 1) and the size (which every image must then share; otherwise an
// error names two files of different sizes). A test split packed with its training split's
// resolved options gets the same shape.
PackOptions resolve_pack_options(const ImageFolder& f, const PackOptions& o);

// "HxW" or "N" (N x N): 1 to 8192 pixels each way; errors name `flag`.
std::pair<int64_t, int64_t> parse_image_size(const std::string& text, const std::string& flag);

// Image i of `f` as a data set holds it: decoded to o.channels, and resized (PIL's bilinear) to
// o.height x o.width where its own size differs. `o` must be resolved (no zeros).
std::vector<uint8_t> load_folder_image(const ImageFolder& f, int64_t i, const PackOptions& o);

// Per-channel sums of 8-bit pixels and of their squares, exact integers: statistics that are
// the same whatever order or thread adds them.
struct ChannelSums {
  explicit ChannelSums(int channels)
      : sum(static_cast<size_t>(channels)), squares(static_cast<size_t>(channels)) {}
  void add(const uint8_t* hwc, int64_t pixels);  // pixels x channels bytes
  void add(const ChannelSums& other);
  // Mean and std on the [0, 1] scale (population std; 1 for a channel that never varies).
  void finish(std::vector<float>& mean, std::vector<float>& std) const;
  std::vector<uint64_t> sum, squares;
  uint64_t values = 0;  // pixels added
};

// Decodes every image of `f` (on the kernel pool, a block of 4096 at a time), resizes them if
// asked, and writes an mlai-images-1 file at `path` named `name`, with the per-channel mean and
// std of the pixels written. Returns that file's header (everything but the pixels). Errors
// name the image file; the file at path is only replaced once complete.
Dataset pack_image_folder(const ImageFolder& f, const std::string& path, const PackOptions& o,
                          const std::string& name, const WriteProgress& progress = {});

// --dataset folder: DIR's splits (image_folder_splits) as data sets whose pixels are read on
// demand (Dataset::source): each image decoded and resized by the loader's workers every time a
// batch needs it, as torchvision's ImageFolder does in DataLoader workers. The test split takes
// the training split's classes, colour and size (its images resized to it). Normalization
// statistics are measured on the training images: all of them, or a fixed sample of
// `stats_images` (the same sample in every run), the test split normalized with them.
struct FolderData {
  Dataset train, test;               // test: count 0 without a test/ or val/ folder
  std::vector<std::string> skipped;  // files that are not images, in either split
  int64_t stats_images = 0;          // how many training images the statistics come from
};
FolderData load_image_folder(const std::string& dir, const PackOptions& o, int64_t stats_images);

}  // namespace mlai::io
