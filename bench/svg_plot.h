// svg_plot: histograms drawn side by side as one self-contained SVG file, so that a
// benchmark's distributions can be compared at a glance without a plotting tool.
// Benchmarks only; it knows nothing of what was measured.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace sdx::bench::svg {

// One histogram: a panel of the plot.
struct Panel {
  std::string name;   // its heading (the benchmark's row label)
  std::string note;   // a line under the heading (counts, medians)
  size_t series = 0;  // index into Plot::series: its colour and legend entry
  bool new_line = false;  // start a new line of panels here
  std::vector<uint64_t> counts;  // per bucket, as many as Plot::buckets
};

struct Plot {
  std::string title;
  std::string subtitle;
  std::string x_label;               // what the buckets are
  std::vector<std::string> buckets;  // bucket labels, in order
  std::vector<std::string> series;   // legend names; colours follow this order
  std::vector<Panel> panels;
  size_t columns = 4;
};

// The whole SVG document. Every panel shares one x range (the buckets any panel uses)
// and one logarithmic count scale, so bar heights compare across panels; each panel
// is a <g class="panel" data-row="NAME">.
std::string render_histograms(const Plot& plot);

}  // namespace sdx::bench::svg
