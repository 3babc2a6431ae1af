// Image files in torchvision's ImageFolder layout (ROOT/<class>/<image>.png|.jpg, classes
// sorted by name), packed into mlai's HDF5 format so mlai_train streams them like any packed
// data set: what mlai_convert --from folder does with a user's own images.
#pragma once

#include <cstdint>
#include <string>
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
};

// `o` with what it leaves open (0) learnt from the headers of f's files: the channels (3 if any
// image is in colour, else 1) and the size (which every image must then share; otherwise an
// error names two files of different sizes). A test split packed with its training split's
// resolved options gets the same shape.
PackOptions resolve_pack_options(const ImageFolder& f, const PackOptions& o);

// Decodes every image of `f` (on the kernel pool, a block of 4096 at a time), resizes them if
// asked, and writes an mlai-images-1 file at `path` named `name`, with the per-channel mean and
// std of the pixels written. Returns that file's header (everything but the pixels). Errors
// name the image file; the file at path is only replaced once complete.
Dataset pack_image_folder(const ImageFolder& f, const std::string& path, const PackOptions& o,
                          const std::string& name, const WriteProgress& progress = {});

}  // namespace mlai::io
