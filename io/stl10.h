// STL-10 (Coates, Lee and Ng), binary version: the folder stl10_binary/ that
// stl10_binary.tar.gz unpacks to, and that torchvision's STL10(root, download=True) leaves
// under root. train_X.bin / test_X.bin hold 96x96 colour images as uint8, each three planes
// (R, G, B) stored column by column (the pixel at row y, column x of plane c is byte
// c*9216 + x*96 + y of its image, MATLAB's order); train_y.bin / test_y.bin one label byte per
// image, 1..10; class_names.txt one name per line. 5000 training and 8000 test images of 10
// classes. The 100000 unlabeled images (unlabeled_X.bin) are not read.
#pragma once

#include <string>

#include "io/dataset.h"

namespace mlai::io {

constexpr int64_t kStl10Side = 96;
constexpr int64_t kStl10ImageBytes = 3 * kStl10Side * kStl10Side;  // 27648

// The images and labels files of `split` ("train" or "test") in `dir` or in dir/stl10_binary/.
// Throws listing the paths tried when neither holds them.
std::pair<std::string, std::string> find_stl10_files(const std::string& dir,
                                                     const std::string& split);

// Reads a split into NHWC uint8 pixels and labels 0..9 (the files' 1..10, as torchvision
// shifts them), class names from class_names.txt beside the images when it names 10 classes.
// Throws naming the file on a size that is not a whole number of images, a label count that
// differs from the image count, and the record on a label outside 1..10.
Dataset read_stl10(const std::string& images_file, const std::string& labels_file);

Dataset load_stl10(const std::string& dir, const std::string& split);

}  // namespace mlai::io
