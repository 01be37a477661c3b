// libtorch attaches a C++ backtrace to every error it throws and, when tch reads the error's
// text, symbolizes it frame by frame (a linear symbol search per frame through libtorch's
// tables: milliseconds per error). shardfuzz keeps only an error's first line (the message a
// Python user sees), so it installs a fetcher that returns an empty backtrace instead. The
// message text and the error's class do not change.
#include <c10/util/Backtrace.h>
#include <c10/util/Lazy.h>
#include <c10/util/Logging.h>

#include <functional>
#include <memory>
#include <string>

extern "C" void shardfuzz_skip_cpp_backtraces() {
  static const c10::Backtrace empty =
      std::make_shared<c10::PrecomputedLazyValue<std::string>>(std::string());
  c10::SetStackTraceFetcher(std::function<c10::Backtrace()>([] { return empty; }));
}
