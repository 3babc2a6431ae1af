// SVHN (Street View House Numbers), cropped-digits format: the files torchvision's
// SVHN(root, split, download=True) downloads, train_32x32.mat and test_32x32.mat (and
// extra_32x32.mat), level-5 MAT-files (io/matfile.h) holding X, uint8 32 x 32 x 3 x N in
// MATLAB's column-major order, and y, N x 1 labels 1..10 where 10 is the digit 0. Read into a
// Dataset with labels 0..9 (10 becomes 0, as torchvision does) and class names "0".."9".
#pragma once

#include <string>

#include "io/dataset.h"

namespace mlai::io {

// `split`: train, test or extra, from DIR/<split>_32x32.mat. Throws naming the file on a
// missing or malformed file, X or y of the wrong shape, and a label outside 1..10.
Dataset load_svhn(const std::string& dir, const std::string& split);

}  // namespace mlai::io
