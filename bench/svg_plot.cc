#include "svg_plot.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string_view>

namespace sdx::bench::svg {
namespace {

constexpr int kMargin = 20;
constexpr int kHeader = 78;  // title, subtitle, legend
constexpr int kGap = 18;
constexpr int kPanelW = 310;
constexpr int kPanelH = 250;
constexpr int kAxisW = 42;    // room for the count labels left of the bars
constexpr int kTextH = 40;    // heading and note above the bars
constexpr int kLabelsH = 78;  // room for the rotated bucket labels below the bars
constexpr int kBarsH = kPanelH - kTextH - kLabelsH;
// Grey for the first series (the baselines), then colours a reader with the common
// red-green colour blindness still tells apart.
constexpr std::string_view kColours[] = {"#8c8c8c", "#e08a1e", "#2a6fbb", "#b8408f", "#3a9e7a", "#6b4fa0"};

std::string esc(std::string_view s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f", v);
  return buf;
}

std::string colour(size_t series) { return std::string(kColours[series % std::size(kColours)]); }

}  // namespace

std::string render_histograms(const Plot& plot) {
  // The buckets any panel uses, so that empty tails take no room and every panel
  // shares one x axis.
  size_t lo = plot.buckets.size(), hi = 0;
  uint64_t most = 0;
  for (const Panel& p : plot.panels) {
    for (size_t b = 0; b < p.counts.size() && b < plot.buckets.size(); ++b) {
      if (p.counts[b] == 0) continue;
      lo = std::min(lo, b);
      hi = std::max(hi, b);
      most = std::max(most, p.counts[b]);
    }
  }
  if (lo > hi) lo = hi = 0;
  const size_t nb = hi - lo + 1;
  // log(1 + count): a bucket of 1 still shows next to one of 10,000.
  const double top = std::log10(1.0 + static_cast<double>(std::max<uint64_t>(most, 1)));
  auto bar_h = [&](uint64_t c) { return static_cast<double>(kBarsH) * std::log10(1.0 + static_cast<double>(c)) / top; };

  struct Place {
    int x, y;
  };
  std::vector<Place> places;
  const size_t columns = std::max<size_t>(plot.columns, 1);
  size_t col = 0, line = 0;
  for (size_t i = 0; i < plot.panels.size(); ++i) {
    if (i > 0 && (col == columns || (plot.panels[i].new_line && col != 0))) ++line, col = 0;
    places.push_back({kMargin + static_cast<int>(col) * (kPanelW + kGap),
                      kMargin + kHeader + static_cast<int>(line) * (kPanelH + kGap)});
    ++col;
  }
  const int width = 2 * kMargin + static_cast<int>(columns) * kPanelW + static_cast<int>(columns - 1) * kGap;
  const int height = kMargin + kHeader + static_cast<int>(plot.panels.empty() ? 0 : line + 1) * (kPanelH + kGap) + kMargin;

  std::string s;
  s += "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" + std::to_string(width) + "\" height=\"" +
       std::to_string(height) + "\" viewBox=\"0 0 " + std::to_string(width) + " " + std::to_string(height) +
       "\" font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\">\n";
  s += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  s += "<text x=\"" + std::to_string(kMargin) + "\" y=\"" + std::to_string(kMargin + 16) +
       "\" font-size=\"18\" font-weight=\"bold\">" + esc(plot.title) + "</text>\n";
  s += "<text x=\"" + std::to_string(kMargin) + "\" y=\"" + std::to_string(kMargin + 36) + "\" font-size=\"12\">" +
       esc(plot.subtitle) + "</text>\n";
  int lx = kMargin;
  const int ly = kMargin + 52;
  for (size_t k = 0; k < plot.series.size(); ++k) {
    s += "<rect x=\"" + std::to_string(lx) + "\" y=\"" + std::to_string(ly) + "\" width=\"14\" height=\"14\" fill=\"" +
         colour(k) + "\"/>";
    s += "<text x=\"" + std::to_string(lx + 20) + "\" y=\"" + std::to_string(ly + 12) + "\" font-size=\"12\">" +
         esc(plot.series[k]) + "</text>\n";
    lx += 20 + 7 * static_cast<int>(plot.series[k].size()) + 24;
  }

  const double bw = static_cast<double>(kPanelW - kAxisW - 8) / static_cast<double>(nb);
  auto bucket = [&](size_t b) { return b < plot.buckets.size() ? esc(plot.buckets[b]) : std::string(); };
  for (size_t i = 0; i < plot.panels.size(); ++i) {
    const Panel& p = plot.panels[i];
    const int x0 = places[i].x, y0 = places[i].y;
    const int base = y0 + kTextH + kBarsH;  // the bars' bottom
    const int left = x0 + kAxisW;
    s += "<g class=\"panel\" data-row=\"" + esc(p.name) + "\">\n";
    s += "<rect x=\"" + std::to_string(x0) + "\" y=\"" + std::to_string(y0) + "\" width=\"" + std::to_string(kPanelW) +
         "\" height=\"" + std::to_string(kPanelH) + "\" fill=\"none\" stroke=\"#d0d0d0\"/>\n";
    s += "<text x=\"" + std::to_string(x0 + 6) + "\" y=\"" + std::to_string(y0 + 16) +
         "\" font-size=\"12\" font-weight=\"bold\" fill=\"" + colour(p.series) + "\">" + esc(p.name) + "</text>\n";
    s += "<text x=\"" + std::to_string(x0 + 6) + "\" y=\"" + std::to_string(y0 + 31) + "\" font-size=\"10\">" +
         esc(p.note) + "</text>\n";
    // Grid lines at 1, 10, 100, ... stores.
    for (uint64_t g = 1; g <= std::max<uint64_t>(most, 1); g *= 10) {
      const std::string y = num(base - bar_h(g));
      s += "<line x1=\"" + std::to_string(left) + "\" x2=\"" + std::to_string(x0 + kPanelW - 8) + "\" y1=\"" + y +
           "\" y2=\"" + y + "\" stroke=\"#ececec\"/>";
      s += "<text x=\"" + std::to_string(left - 4) + "\" y=\"" + num(base - bar_h(g) + 3) +
           "\" font-size=\"9\" text-anchor=\"end\">" + std::to_string(g) + "</text>\n";
    }
    s += "<line x1=\"" + std::to_string(left) + "\" x2=\"" + std::to_string(x0 + kPanelW - 8) + "\" y1=\"" +
         std::to_string(base) + "\" y2=\"" + std::to_string(base) + "\" stroke=\"#606060\"/>\n";
    for (size_t b = lo; b <= hi; ++b) {
      const uint64_t c = b < p.counts.size() ? p.counts[b] : 0;
      const double bx = left + bw * static_cast<double>(b - lo);
      const double cx = bx + bw / 2;
      if (c > 0) {
        const double h = bar_h(c);
        s += "<rect x=\"" + num(bx + 1) + "\" y=\"" + num(base - h) + "\" width=\"" + num(std::max(bw - 2, 1.0)) +
             "\" height=\"" + num(h) + "\" fill=\"" + colour(p.series) + "\"><title>" + bucket(b) + ": " +
             std::to_string(c) + "</title></rect>";
        s += "<text x=\"" + num(cx) + "\" y=\"" + num(base - h - 2) + "\" font-size=\"8\" text-anchor=\"middle\">" +
             std::to_string(c) + "</text>\n";
      }
      s += "<text transform=\"translate(" + num(cx + 3) + "," + std::to_string(base + 8) +
           ") rotate(-55)\" font-size=\"9\" text-anchor=\"end\">" + bucket(b) + "</text>\n";
    }
    s += "<text x=\"" + std::to_string(x0 + kPanelW - 8) + "\" y=\"" + std::to_string(y0 + kPanelH - 4) +
         "\" font-size=\"9\" text-anchor=\"end\" fill=\"#606060\">" + esc(plot.x_label) + "</text>\n";
    s += "</g>\n";
  }
  s += "</svg>\n";
  return s;
}

}  // namespace sdx::bench::svg
