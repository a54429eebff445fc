// Render every chart of the page with the Vega bundle served by the site itself (no CDN).
function qbuildRenderCharts() {
  document.querySelectorAll(".qb-chart").forEach(function (el) {
    if (el.dataset.rendered) return;
    var spec = JSON.parse(document.getElementById(el.dataset.specId).textContent);
    el.dataset.rendered = "1";
    vegaEmbed(el, spec, { actions: false, renderer: "svg" }).catch(function (err) {
      el.textContent = "Chart failed to render: " + err;
      console.error(err);
    });
  });
}
document.addEventListener("DOMContentLoaded", qbuildRenderCharts);
