// mlai_train: train an image classifier.
//   mlai_train --arch mlp --dataset fashion-mnist --epochs 10
// Every flag is documented in --help; --config FILE.yaml reads them from a file (what
// --print-config prints). Bad flags exit with code 2 and a one-line error; a
// failure while training exits with 1; a run stopped by SIGINT/SIGTERM/SIGUSR1 saves
// checkpoints/last.h5 (resume with --resume) and exits with 128 + the signal number.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <exception>
#include <filesystem>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "bin/train_flags.h"
#include "dist/process_group.h"
#include "kernels/parallel.h"
#include "nn/checkpoint.h"
#include "nn/config_file.h"
#include "nn/trainer.h"
#include "tensor/device.h"

namespace {

// CLI11's complaint about a --config file, said in mlai's words: which file, which key.
std::string config_error(const CLI::App& app, const std::string& what) {
  const std::string file = app.get_option("--config")->as<std::string>();
  const std::string prefix = "INI was not able to parse ";
  if (what.rfind(prefix, 0) != 0) return "--config " + file + ": " + what;
  std::string key = what.substr(prefix.size());
  return "--config " + file + ": unknown key '" + key +
         "' (keys are the flags without '--': mlai_train --print-config lists them)";
}

// A bad value's error names its flag; when that setting came from the --config file (the flag
// is not on the command line), say so: the file and the key.
std::string name_config_source(const CLI::App& app, int argc, char** argv, const std::string& msg) {
  if (app.get_option("--config")->count() == 0) return msg;
  for (size_t at = msg.find("--"); at != std::string::npos; at = msg.find("--", at + 2)) {
    size_t end = at + 2;
    while (end < msg.size() && (std::isalnum(static_cast<unsigned char>(msg[end])) || msg[end] == '-'))
      ++end;
    const std::string flag = msg.substr(at, end - at);
    if (flag.size() <= 2 || flag == "--config" || app.get_option_no_throw(flag) == nullptr) continue;
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      if (a == flag || a.rfind(flag + "=", 0) == 0) return msg;  // given on the command line
    }
    return "--config " + app.get_option("--config")->as<std::string>() + ": key '" +
           flag.substr(2) + "': " + msg;
  }
  return msg;
}

}  // namespace

// --devices N without a launcher: this program again, N times, under mpirun (one rank per
// GPU or N CPU ranks, their threads free to use any core). Returns only when mpirun cannot run.
static int launch_ranks(int argc, char** argv, int64_t n) {
  std::vector<std::string> args{"mpirun", "-np", std::to_string(n), "--bind-to", "none"};
  if (geteuid() == 0) args.push_back("--allow-run-as-root");  // (containers, CI)
  if (static_cast<unsigned>(n) > std::thread::hardware_concurrency())
    args.push_back("--oversubscribe");
  std::error_code ec;
  const std::filesystem::path self = std::filesystem::read_symlink("/proc/self/exe", ec);
  args.push_back(ec ? std::string(argv[0]) : self.string());
  for (int i = 1; i < argc; ++i) args.emplace_back(argv[i]);
  std::string shown;
  for (const auto& a : args) shown += (shown.empty() ? "" : " ") + a;
  std::printf("--devices %lld: starting %lld processes: %s\n", static_cast<long long>(n),
              static_cast<long long>(n), shown.c_str());
  std::fflush(stdout);
  std::vector<char*> ptrs;
  for (auto& a : args) ptrs.push_back(a.data());
  ptrs.push_back(nullptr);
  execvp("mpirun", ptrs.data());
  std::fprintf(stderr,
               "mlai_train: error: --devices %lld: cannot run mpirun (%s): install Open MPI "
               "(apt-get install openmpi-bin, or module load openmpi), or start the ranks "
               "yourself (mpirun -np %lld ... or srun)\n",
               static_cast<long long>(n), std::strerror(errno), static_cast<long long>(n));
  return 1;
}

int main(int argc, char** argv) {
  mlai::dist::ProcessGroup* group = nullptr;
  try {
    group = &mlai::dist::ProcessGroup::init(&argc, &argv);
    // Ranks sharing a node share its CPUs (unless a launcher bound them or the environment
    // says how many threads), before any kernel starts the thread pool.
    mlai::kernels::cpu::configure_threads(group->local_world());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mlai_train: error: cannot start MPI: %s\n", e.what());
    return 1;
  }
  // Flag errors are the same on every rank: rank 0 says it, all exit with 2.
  auto flag_error = [&](const std::string& msg) {
    if (group->is_main()) std::fprintf(stderr, "mlai_train: error: %s\n", msg.c_str());
    group->finalize();
    return 2;
  };
  mlai::nn::Config cfg;
  std::vector<std::string> hidden;
  bool print_config = false;
  CLI::App app{"mlai_train: train an image classifier on the CPU or GPUs (mlai)"};
  app.get_formatter()->column_width(34);
  // LightningCLI's --config / --print_config: a YAML file that CLI11 applies through mlai's
  // reader, a flag on the command line winning over the same key in it.
  app.set_config("--config", "",
                 "Read settings from a YAML file of key: value lines, each key a flag without "
                 "'--' (what --print-config prints and each run saves as config.yaml); flags "
                 "on the command line override it");
  app.config_formatter(mlai::nn::yaml_config_reader());
  app.allow_config_extras(CLI::config_extras_mode::error);
  app.add_flag("--print-config", print_config,
               "Print every setting (after --config and the other flags) as a --config file, "
               "and exit");
  mlai::train_flags::add_flags(app, cfg, hidden);
  try {
    try {
      app.parse(argc, argv);
    } catch (const CLI::ConfigError& e) {
      throw CLI::ConfigError(config_error(app, e.what()));
    } catch (const CLI::FileError& e) {
      throw CLI::FileError("--config: " + std::string(e.what()));
    }
    // A bare --fast-dev-run is 1 batch; --fast-dev-run 0 (or 0 in a config file) is off.
    if (app.count("--fast-dev-run")) {
      const auto& given = app.get_option("--fast-dev-run")->results();
      if (given.empty() || (given.size() == 1 && given[0].empty())) cfg.fast_dev_run = 1;
    }
    if (app.count("--lr-find") && cfg.lr_find.empty()) cfg.lr_find = "apply";  // bare --lr-find
    if (cfg.lr_find == "true") cfg.lr_find = "apply";  // lr-find = true in a config file
    if (cfg.lr_find == "false") cfg.lr_find.clear();
    // Lightning's max_steps alone trains as many epochs as the steps need (max_epochs -1).
    if (app.count("--max-steps") && !app.count("--epochs") && cfg.max_steps > 0) cfg.epochs = -1;
    cfg.hidden = mlai::train_flags::parse_widths(hidden);
    // torchvision's MobileNetV2 has dropout 0.2 before its classifier: the default there.
    if (!app.count("--dropout") && cfg.arch.rfind("mobilenet", 0) == 0) cfg.dropout = 0.2;
    // --test-only, --validate-only: what the command line (or --config) leaves unset comes from the checkpoint's
    // run, so `--test-only --test-ckpt best.h5` tests the model it trained on its data.
    if ((cfg.test_only || cfg.validate_only) && mlai::nn::checkpoint_exists(cfg.test_ckpt)) {
      std::set<std::string> given;
      for (const CLI::Option* o : app.get_options())
        if (o->count() > 0) {
          std::string key = o->get_name();
          if (key.rfind("--", 0) == 0) key = key.substr(2);
          std::replace(key.begin(), key.end(), '-', '_');
          given.insert(key);
        }
      try {
        mlai::nn::take_model_and_data_settings(cfg, mlai::nn::checkpoint_config(cfg.test_ckpt),
                                               given);
      } catch (const std::runtime_error&) {
        // a weights file (tools/torch_interop.py export) has no run settings: the flags say
      }
    }
    cfg.validate();
  } catch (const CLI::CallForHelp& e) {
    const int rc = group->is_main() ? app.exit(e) : 0;
    group->finalize();
    return rc;
  } catch (const CLI::CallForAllHelp& e) {
    const int rc = group->is_main() ? app.exit(e) : 0;
    group->finalize();
    return rc;
  } catch (const CLI::ParseError& e) {
    return flag_error(name_config_source(app, argc, argv, e.what()) + " (see --help)");
  } catch (const std::invalid_argument& e) {
    return flag_error(name_config_source(app, argc, argv, e.what()));
  }
  if (print_config) {
    if (group->is_main()) std::fputs(mlai::nn::config_yaml(cfg).c_str(), stdout);
    group->finalize();
    return 0;
  }
  // --devices N: started alone, the N ranks are started here, as Lightning's Trainer(devices=N)
  // does; under a launcher, the launcher decided, and the two must agree.
  if (cfg.devices > 1 && !mlai::dist::launched_by_mpi()) {
    const int gpus = cfg.device == "cpu" ? 0 : mlai::tensor::cuda_device_count();
    if (gpus > 0 && cfg.devices > gpus)
      return flag_error("--devices " + std::to_string(cfg.devices) + ": this machine has " +
                        std::to_string(gpus) + " GPU(s), one per process");
    return launch_ranks(argc, argv, cfg.devices);
  }
  if (cfg.devices > 0 && cfg.devices != group->world())
    return flag_error("--devices " + std::to_string(cfg.devices) + ", but " +
                      std::to_string(group->world()) +
                      " rank(s) were started (mpirun -np / srun --ntasks): give the same number, "
                      "or leave --devices out");
  std::string command;
  for (int i = 0; i < argc; ++i) command += (i ? " " : "") + std::string(argv[i]);
  int rc = 0;
  try {
    mlai::nn::install_stop_handlers();
    mlai::nn::Trainer trainer(cfg, command, *group);
    const auto res = trainer.fit();
    rc = res.stop_signal ? 128 + res.stop_signal : 0;
  } catch (const std::invalid_argument& e) {  // bad flag values found while setting up
    const std::string msg = name_config_source(app, argc, argv, e.what());
    if (group->world() > 1) group->abort("mlai_train: error: " + msg, 2);
    std::fprintf(stderr, "mlai_train: error: %s\n", msg.c_str());
    return 2;
  } catch (const std::exception& e) {
    // One rank's failure ends the whole job: the others may be waiting in a collective.
    group->abort("mlai_train: error: " + std::string(e.what()), 1);
  }
  group->finalize();
  return rc;
}
