// The trainer's evaluations of chosen weights (see trainer.h): the final test, --test-only and
// --validate-only, with the weights --test-ckpt names, printed, written to metrics.csv and
// logged to TensorBoard.
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <string>

#include "io/tensorboard.h"
#include "nn/checkpoint.h"
#include "nn/trainer.h"

namespace mlai::nn {

void Trainer::load_test_weights(const char* verb) {
  if (cfg_.test_ckpt == "last") return;
  if (cfg_.test_ckpt != "best") {  // a file (Lightning's ckpt_path=PATH)
    if (main_) load_weights(cfg_.test_ckpt, *model_, {});
    sync_from_rank0(false);
    if (main_) std::printf("%s the weights of %s\n", verb, cfg_.test_ckpt.c_str());
    return;
  }
  if (dev_run_ || std::isnan(state_.best_score)) {
    if (main_)
      std::printf("--test-ckpt best: %s, so the test uses the final weights\n",
                  dev_run_ ? "fast_dev_run writes no best.h5"
                           : "no validation in this run's directory chose a best.h5");
    return;
  }
  const std::string path = dir_ + "/checkpoints/best.h5";
  if (main_) load_weights(path, *model_, {});
  sync_from_rank0(false);
  // Without a validation set best.h5 is the best by the training metric (keep_if_best).
  if (main_)
    std::printf("%s the weights of %s (%s %.4f)\n", verb, path.c_str(),
                data_.val.count > 0                     ? cfg_.checkpoint_monitor.c_str()
                : cfg_.checkpoint_monitor == "val_loss" ? "training loss"
                                                        : "training accuracy",
                state_.best_score);
}

void Trainer::test_and_report(FitResult& res) {
  const int64_t test_batches =
      dev_run_ ? cfg_.fast_dev_run
               : limit_batches(cfg_.limit_test_batches,
                               (data_.test.count + cfg_.batch_size - 1) / cfg_.batch_size,
                               "--limit-test-batches");
  if (data_.test.count > 0 && test_batches > 0) load_test_weights("testing");
  {
    Profiler::Scope s(profiler_, "test");
    res.test = evaluate(data_.test, test_batches);
  }
  report_evaluation(res.test, true);
}

void Trainer::validate_and_report(FitResult& res) {
  const int64_t batches = limit_batches(cfg_.limit_val_batches,
                                        (data_.val.count + cfg_.batch_size - 1) / cfg_.batch_size,
                                        "--limit-val-batches");
  if (data_.val.count > 0 && batches > 0) load_test_weights("validating");
  {
    Profiler::Scope s(profiler_, "validation");
    res.val = evaluate(data_.val, batches);
  }
  report_evaluation(res.val, false);
}

void Trainer::report_evaluation(const EvalResult& r, bool test) {
  // What trainer.test and trainer.validate print and log: the same metrics, under test/* or
  // val/* (the names training's validations use too).
  const std::string key = test ? "test" : "val";
  const char* name = test ? "test" : "validation";
  if (r.samples > 0 && main_) {
    const auto& cm = r.confusion;
    std::printf(
        "%s loss: %.4f    %s accuracy: %.4f    macro precision: %.4f    macro recall: "
        "%.4f    macro F1: %.4f    (%lld images)\n",
        name, r.loss, name, cm.accuracy(), cm.macro_precision(), cm.macro_recall(), cm.macro_f1(),
        static_cast<long long>(r.samples));
    const std::string details = cm.report() + name +
                                " confusion matrix (rows: true class, columns: predicted)\n" +
                                cm.to_string();
    // Up to kManyClasses the per-class table and the matrix fit a terminal; beyond (CIFAR-100's
    // 100 x 100) they go to a file in the run's directory.
    if (r.top5 >= 0 && cm.num_classes() > kManyClasses)
      std::printf("%s top-5 accuracy: %.4f\n", name, r.top5);
    if (cm.num_classes() <= kManyClasses) {
      std::printf("%s", details.c_str());
    } else if (!dev_run_) {
      const std::string file = key + "_report.txt";
      std::ofstream(dir_ + "/" + file) << details;
      std::printf("per-class metrics and the confusion matrix (%d classes): %s/%s\n",
                  cm.num_classes(), dir_.c_str(), file.c_str());
    }
    if (tb_) {  // Lightning's trainer.test/validate log to the logger too
      tb_->add_scalar(key + "/loss", static_cast<float>(r.loss), state_.global_step);
      tb_->add_scalar(key + "/accuracy", static_cast<float>(cm.accuracy()), state_.global_step);
      if (r.top5 >= 0)
        tb_->add_scalar(key + "/top5_accuracy", static_cast<float>(r.top5), state_.global_step);
      log_per_class(cm, key);
    }
    if (csv_) {
      std::map<std::string, io::CsvLogger::Value> row{{"epoch", test ? "test" : "validate"},
                                                      {"step", state_.global_step},
                                                      {key + "_loss", r.loss},
                                                      {key + "_accuracy", cm.accuracy()},
                                                      {key + "_precision", cm.macro_precision()},
                                                      {key + "_recall", cm.macro_recall()},
                                                      {key + "_f1", cm.macro_f1()},
                                                      {key + "_confusion", confusion_json(cm)}};
      if (r.top5 >= 0) row.insert({key + "_top5_accuracy", r.top5});
      csv_->log(row);
    }
  }
  if (tb_) {  // the HPARAMS tab shows the run as finished
    tb_->end_hparams_session(true);
    tb_->flush();
  }
}

}  // namespace mlai::nn
