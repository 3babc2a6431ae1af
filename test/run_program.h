// Runs one of the built programs (bin/mlai_train, mlai_convert, ...) with arguments and
// collects its exit code and output (stdout and stderr together), for the end-to-end tests.
#pragma once

#include <sys/wait.h>

#include <cstdio>
#include <string>

namespace mlai::testing {

struct CliResult {
  int code;
  std::string out;
};

inline CliResult run_program(const std::string& program, const std::string& args) {
  const std::string cmd = std::string(MLAI_BINARY_DIR) + "/bin/" + program + " " + args + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  std::string out;
  char buf[4096];
  while (p && fgets(buf, sizeof(buf), p)) out += buf;
  const int status = p ? pclose(p) : -1;
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

inline CliResult run_mlai_train(const std::string& args) { return run_program("mlai_train", args); }

inline int count_lines(const std::string& s) {
  int n = 0;
  for (char c : s) n += c == '\n';
  return n;
}

}  // namespace mlai::testing
