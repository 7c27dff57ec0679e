// Supervisor dashboard: plain JavaScript, charts drawn as inline SVG. No build step, no CDN.
// The page holds no token: the supervisor pastes one, it stays in this browser's localStorage
// and goes only to this service's API in the Authorization header.
"use strict";

(function () {
  const TOKEN_KEY = "hazard-reporting-token";
  const LANG_KEY = "hazard-reporting-lang";
  const SVG = "http://www.w3.org/2000/svg";
  const COLORS = ["#2f6fb3", "#c0392b", "#2e8b57", "#d68910", "#8e44ad", "#16a085", "#7f8c8d", "#b9770e", "#34495e"];

  const TEXT = {
    zh: {
      title: "隐患督办看板", tokenLabel: "督办令牌（仅保存在本浏览器）", tokenSave: "保存并加载",
      tokenHint: "向管理员索取督办（supervisor）令牌；页面不包含任何令牌。",
      from: "起始日期", to: "截止日期", community: "社区", category: "类别", all: "全部", apply: "应用",
      csv: "导出 CSV", forget: "清除令牌", periodHtml: "期报（网页）", periodXlsx: "期报（Excel）",
      chartOverdueTime: "各部门超时接收（按日期）", chartOverdueDept: "各部门超时接收率（与上期、去年同期对比）",
      chartCommunity: "各社区整改率与回潮率", overdueList: "超时未接收清单", hotspots: "回潮高发点位",
      campaigns: "专项行动进度", foot: "数据来自隐患生命周期事件流；逾期时间归属当时持有该分拨的部门。",
      loading: "加载中…", ready: "已更新", needToken: "请输入督办令牌。", badToken: "令牌无效或无权限，请重新输入。",
      failed: "加载失败：", reported: "上报", dispatched: "分拨", overdueRate: "超时接收率",
      rectRate: "整改率", relapseRate: "回潮率", medianAck: "接收用时中位数（分钟）", openOverdue: "超时未接收",
      prev: "上期", yoy: "去年同期", current: "本期", none: "暂无数据", department: "部门", deadline: "接收期限",
      overdueFor: "已超时", hours: "小时", grid: "网格", place: "点位", relapses: "回潮次数", last: "最近一次",
      found: "发现", notices: "整改通知书", rectified: "已整改", closed: "已销号", target: "目标", lang: "English",
      notDispatched: "未分拨", address: "地址", openCase: "查看案件", ended: "已结束 · 最终数字",
      upcoming: "未开始", finalOf: "目标", peopleLink: "部门、网格员、调度员入口",
    },
    en: {
      title: "Hazard supervision dashboard", tokenLabel: "Supervisor token (kept in this browser only)",
      tokenSave: "Save and load", tokenHint: "Ask an administrator for a supervisor token; the page contains none.",
      from: "From", to: "To", community: "Community", category: "Category", all: "All", apply: "Apply",
      csv: "Export CSV", forget: "Forget token", periodHtml: "Period report (web page)",
      periodXlsx: "Period report (Excel)",
      chartOverdueTime: "Overdue receipts by department over time",
      chartOverdueDept: "Overdue-receipt rate by department (vs previous period, vs a year earlier)",
      chartCommunity: "Rectification and relapse rates by community", overdueList: "Open overdue dispatches",
      hotspots: "Relapse hotspots", campaigns: "Campaign progress",
      foot: "Built from the hazard lifecycle event stream; overdue time belongs to the department that held the dispatch.",
      loading: "Loading…", ready: "Updated", needToken: "Enter a supervisor token.",
      badToken: "The token is not valid for these reports; enter another.", failed: "Loading failed: ",
      reported: "Reported", dispatched: "Dispatched", overdueRate: "Overdue-receipt rate",
      rectRate: "Rectification rate", relapseRate: "Relapse rate", medianAck: "Median minutes to acknowledge",
      openOverdue: "Open overdue", prev: "Previous", yoy: "Year earlier", current: "This period", none: "No data",
      department: "Department", deadline: "Receipt deadline", overdueFor: "Overdue by", hours: "h", grid: "Grid",
      place: "Place", relapses: "Relapses", last: "Last", found: "Found", notices: "Notices issued",
      rectified: "Rectified", closed: "Closed", target: "target", lang: "中文", notDispatched: "Not dispatched",
      address: "Address", openCase: "Open case", ended: "Ended · final figures", upcoming: "Not started",
      finalOf: "target", peopleLink: "Departments, grid members, operators",
    },
  };

  const state = { lang: localStorage.getItem(LANG_KEY) || "zh", reference: null, data: null, updatedAt: null };
  // Times are shown in the city's zone (the reference data's calendar), never the browser's.
  const DEFAULT_ZONE = "Asia/Shanghai";
  const $ = (id) => document.getElementById(id);
  const t = (key) => TEXT[state.lang][key] || key;

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v !== undefined && v !== null) node.setAttribute(k, String(v));
    }
    for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    return node;
  }

  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v !== undefined && v !== null) node.setAttribute(k, String(v));
    }
    if (text !== undefined) node.textContent = String(text);
    return node;
  }

  function name(label, fallback) {
    if (!label) return fallback;
    return label[state.lang] || label.en || fallback;
  }

  function clip(text, px) {
    // Fit a label into px pixels at 11px: CJK characters are about 11px wide, others about 6px.
    let width = 0;
    for (let i = 0; i < text.length; i++) {
      width += text.charCodeAt(i) > 0x2e80 ? 11 : 6.2;
      if (width > px) return text.slice(0, Math.max(1, i - 1)) + "…";
    }
    return text;
  }

  function zone() {
    return (state.reference && state.reference.timezone) || DEFAULT_ZONE;
  }

  function cityTime(value, parts) {
    // "YYYY-MM-DD HH:MM" (parts "datetime"), "YYYY-MM-DD" ("date") or "HH:MM:SS" ("time") in the city's zone.
    if (!value) return "—";
    const moment = value instanceof Date ? value : new Date(value);
    const fields = Object.fromEntries(new Intl.DateTimeFormat("en-CA", {
      timeZone: zone(), year: "numeric", month: "2-digit", day: "2-digit",
      hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23",
    }).formatToParts(moment).map((p) => [p.type, p.value]));
    const day = `${fields.year}-${fields.month}-${fields.day}`;
    if (parts === "date") return day;
    if (parts === "time") return `${fields.hour}:${fields.minute}:${fields.second}`;
    return `${day} ${fields.hour}:${fields.minute}`;
  }

  function pct(value) {
    return value === null || value === undefined ? "—" : (value * 100).toFixed(1) + "%";
  }

  // ------------------------------------------------------------------ API

  async function api(path, params) {
    const token = localStorage.getItem(TOKEN_KEY);
    if (!token) throw Object.assign(new Error(t("needToken")), { status: 401 });
    const url = new URL(path, window.location.origin);
    for (const [k, v] of Object.entries(params || {})) if (v) url.searchParams.set(k, v);
    const response = await fetch(url, { headers: { Authorization: "Bearer " + token } });
    if (!response.ok) {
      let message = response.statusText;
      try {
        const body = await response.json();
        message = body.error.message + (body.error.details || []).map((d) => " " + d.problem).join("");
      } catch (_) { /* not JSON */ }
      throw Object.assign(new Error(message), { status: response.status });
    }
    return response;
  }

  function filters() {
    return {
      from: $("f-from").value,
      to: $("f-to").value,
      community: $("f-community").value,
      category: $("f-category").value,
    };
  }

  // ------------------------------------------------------------------ charts

  function lineChart(container, series, buckets) {
    container.replaceChildren();
    if (!series.length || !buckets.length) {
      container.append(el("p", { class: "empty" }, t("none")));
      return;
    }
    const W = Math.max(320, Math.round(container.clientWidth || 760)), H = 200, L = 36, R = 10, T = 10, B = 28;
    const max = Math.max(1, ...series.flatMap((s) => s.values.map((v) => v || 0)));
    const x = (i) => L + (buckets.length === 1 ? (W - L - R) / 2 : (i * (W - L - R)) / (buckets.length - 1));
    const y = (v) => T + (H - T - B) * (1 - v / max);
    const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "data-chart": "overdue-time" });
    const ticks = Math.min(max, 4);
    for (let k = 0; k <= ticks; k++) {
      const v = Math.round((max * k) / ticks);
      root.append(svg("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), class: "axis" }));
      root.append(svg("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end", class: "muted" }, v));
    }
    const every = Math.max(1, Math.ceil(buckets.length / Math.max(3, Math.floor(W / 90))));
    buckets.forEach((b, i) => {
      if (i % every === 0) root.append(svg("text", { x: x(i), y: H - 8, "text-anchor": "middle", class: "muted" }, b.slice(5)));
    });
    const legend = el("div", { class: "legend" });
    series.forEach((s, n) => {
      const color = COLORS[n % COLORS.length];
      const points = s.values.map((v, i) => `${x(i)},${y(v || 0)}`).join(" ");
      root.append(svg("polyline", { points, fill: "none", stroke: color, "stroke-width": 2, "data-key": s.key }));
      s.values.forEach((v, i) => {
        const dot = svg("circle", {
          cx: x(i), cy: y(v || 0), r: v ? 3.5 : 1.5, fill: color,
          "data-key": s.key, "data-bucket": buckets[i], "data-value": v === null ? "" : v,
        });
        dot.append(svg("title", {}, `${name(s.label, s.key)} ${buckets[i]}: ${v}`));
        root.append(dot);
      });
      const swatch = el("i");
      swatch.style.background = color;
      legend.append(el("span", {}, swatch, name(s.label, s.key)));
    });
    container.append(root, legend);
  }

  function barChart(container, chartId, rows, seriesDefs) {
    // rows: [{key, label, values: {series: number|null}}]; horizontal grouped bars of rates (0..1).
    container.replaceChildren();
    if (!rows.length) {
      container.append(el("p", { class: "empty" }, t("none")));
      return;
    }
    const W = Math.max(300, Math.round(container.clientWidth || 420)), labelW = Math.min(150, Math.round(W * 0.34)), R = 48, bar = 10, gap = 3, groupGap = 12;
    const groupH = seriesDefs.length * (bar + gap) + groupGap;
    const H = rows.length * groupH + 10;
    const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "data-chart": chartId });
    const width = W - labelW - R;
    rows.forEach((row, r) => {
      const top = 5 + r * groupH;
      const label = name(row.label, row.key);
      root.append(svg("text", { x: labelW - 6, y: top + (seriesDefs.length * (bar + gap)) / 2 + 4, "text-anchor": "end" },
        clip(label, labelW - 10)));
      seriesDefs.forEach((def, s) => {
        const v = row.values[def.id];
        const yTop = top + s * (bar + gap);
        root.append(svg("rect", { x: labelW, y: yTop, width, height: bar, fill: "#eef1f5" }));
        const rect = svg("rect", {
          x: labelW, y: yTop, width: Math.max(0, Math.min(1, v || 0)) * width, height: bar, fill: def.color,
          "data-key": row.key, "data-series": def.id, "data-value": v === null || v === undefined ? "" : v,
        });
        rect.append(svg("title", {}, `${label} · ${def.name}: ${pct(v)}`));
        root.append(rect);
        root.append(svg("text", { x: labelW + width + 4, y: yTop + bar - 1, class: "muted" }, pct(v)));
      });
    });
    const legend = el("div", { class: "legend" });
    for (const def of seriesDefs) {
      const swatch = el("i");
      swatch.style.background = def.color;
      legend.append(el("span", {}, swatch, def.name));
    }
    container.append(root, legend);
  }

  // ------------------------------------------------------------------ panels

  function kpis(summary) {
    const tot = summary.totals;
    const card = (id, label, value, cmp) =>
      el("div", { class: "kpi", "data-kpi": id }, el("div", { class: "name" }, label),
        el("div", { class: "value" }, value), el("div", { class: "cmp" }, cmp || ""));
    const cmp = (key) => `${t("prev")} ${pct(tot.previous_period[key])} · ${t("yoy")} ${pct(tot.year_earlier[key])}`;
    $("kpis").replaceChildren(
      card("reported", t("reported"), tot.reported),
      card("dispatched", t("dispatched"), tot.dispatched),
      card("overdue_receipt_rate", t("overdueRate"), pct(tot.overdue_receipt_rate), cmp("overdue_receipt_rate")),
      card("receipt_overdue_open", t("openOverdue"), tot.receipt_overdue_open),
      card("rectification_rate", t("rectRate"), pct(tot.rectification_rate), cmp("rectification_rate")),
      card("relapse_rate", t("relapseRate"), pct(tot.relapse_rate), cmp("relapse_rate")),
      card("median_minutes_to_acknowledge", t("medianAck"),
        tot.median_minutes_to_acknowledge === null ? "—" : tot.median_minutes_to_acknowledge),
    );
  }

  function table(id, head, rows) {
    const node = $(id);
    node.replaceChildren();
    if (!rows.length) {
      node.append(el("tbody", {}, el("tr", {}, el("td", { class: "empty" }, t("none")))));
      return;
    }
    node.append(el("thead", {}, el("tr", {}, ...head.map((h) => el("th", {}, h)))));
    node.append(el("tbody", {}, ...rows));
  }

  function communityName(id) {
    const c = (state.reference ? state.reference.communities : []).find((x) => x.id === id);
    return c ? c[state.lang] : id || "—";
  }

  function categoryName(id) {
    const c = (state.reference ? state.reference.categories : []).find((x) => x.id === id);
    return c ? c[state.lang] : id || "—";
  }

  function render() {
    const d = state.data;
    if (!d) return;
    kpis(d.summaryDept);
    lineChart($("chart-overdue-time"), d.series.series, d.series.buckets);
    barChart($("chart-overdue-dept"), "overdue-dept",
      d.summaryDept.groups.filter((g) => g.dispatched || g.previous_period.dispatched || g.year_earlier.dispatched).map((g) => ({
        key: g.key, label: g.label,
        values: { current: g.overdue_receipt_rate, previous: g.previous_period.overdue_receipt_rate, year_earlier: g.year_earlier.overdue_receipt_rate },
      })),
      [{ id: "current", name: t("current"), color: COLORS[1] }, { id: "previous", name: t("prev"), color: COLORS[6] },
        { id: "year_earlier", name: t("yoy"), color: COLORS[3] }]);
    barChart($("chart-community"), "community",
      d.summaryCommunity.groups.map((g) => ({ key: g.key, label: g.label, values: { rectification_rate: g.rectification_rate, relapse_rate: g.relapse_rate } })),
      [{ id: "rectification_rate", name: t("rectRate"), color: COLORS[2] }, { id: "relapse_rate", name: t("relapseRate"), color: COLORS[1] }]);
    table("overdue-table",
      [t("address"), t("department"), t("category"), t("community"), t("deadline"), t("overdueFor")],
      d.overdue.items.map((i) => el("tr", { "data-dispatch-id": i.dispatch_id, "data-hazard-id": i.hazard_id },
        el("td", { "data-cell": "address" },
          el("a", { href: i.case_url, target: "_blank", rel: "noopener", title: t("openCase") + " " + i.hazard_id },
            i.address || t("openCase"))),
        el("td", {}, name(i.department, i.department_id)), el("td", {}, categoryName(i.category)),
        el("td", {}, communityName(i.community_id)),
        el("td", { "data-cell": "deadline" }, cityTime(i.receipt_deadline, "datetime")),
        el("td", { class: "num" }, (i.minutes_overdue / 60).toFixed(1) + " " + t("hours")))));
    table("hotspot-table", [t("place"), t("community"), t("relapses"), t("last")],
      d.hotspots.items.map((h) => el("tr", { "data-place": h.place_key },
        el("td", { "data-cell": "place", title: h.place_key }, h.address || name(h.grid, h.grid_id || h.place_key)),
        el("td", { "data-cell": "community" }, name(h.community, communityName(h.community_id))),
        el("td", { class: "num", "data-value": h.relapses }, h.relapses),
        el("td", { "data-cell": "last" }, cityTime(h.last_relapsed_at, "date")))));
    campaigns(d.campaigns.campaigns);
  }

  function campaigns(list) {
    const box = $("campaigns");
    box.replaceChildren();
    for (const c of list) {
      // An ended campaign shows its final figures (what it found in its window), not progress to a target.
      const ended = c.state === "ended";
      const when = `${c.starts_on} – ${c.ends_on}` + (ended ? ` · ${t("ended")}` : c.state === "upcoming" ? ` · ${t("upcoming")}` : "");
      const block = el("div", { class: "campaign", "data-campaign": c.campaign_id, "data-state": c.state },
        el("div", { class: "head" }, el("strong", {}, name(c.label, c.campaign_id)),
          el("span", { class: "meta" }, when)));
      const metrics = [["found", t("found")], ["notices_issued", t("notices")], ["rectified", t("rectified")]];
      if (ended) metrics.push(["closed", t("closed")]);
      for (const [key, label] of metrics) {
        const target = c.targets[key];
        const done = c[key];
        const text = ended
          ? (target ? `${done} (${t("finalOf")} ${target})` : String(done))
          : (target ? `${done} / ${target} ${t("target")}` : String(done));
        const row = el("div", { class: "bar-label" }, el("span", {}, label),
          el("span", { "data-metric": key, "data-value": done }, text));
        if (ended) {
          block.append(row);
          continue;
        }
        const share = target ? Math.min(1, done / target) : null;
        const fill = el("span");
        fill.style.width = ((share || 0) * 100).toFixed(1) + "%";
        block.append(row, el("div", { class: "bar" }, fill));
      }
      box.append(block);
    }
  }

  // ------------------------------------------------------------------ loading

  function setStatus(text, error) {
    $("status").textContent = text;
    $("status").classList.toggle("error", Boolean(error));
  }

  function readyStatus() {
    // In the page's language and the city's time, re-made when the language changes.
    return `${t("ready")} ${cityTime(state.updatedAt, "time")}`;
  }

  async function loadReference() {
    state.reference = await (await api("/api/v1/reports/reference")).json();
    fillSelect($("f-community"), state.reference.communities);
    fillSelect($("f-category"), state.reference.categories);
  }

  function fillSelect(select, items) {
    const keep = select.value;
    select.replaceChildren(el("option", { value: "" }, t("all")));
    for (const item of items) select.append(el("option", { value: item.id }, item[state.lang]));
    select.value = keep;
  }

  async function load() {
    document.body.dataset.state = "loading";
    setStatus(t("loading"));
    try {
      if (!state.reference) await loadReference();
      // Without dates, the API answers for its default period, the last 30 days of the city's own
      // calendar; the fields then show that period. (The browser's clock would name another day for
      // hours on end: toISOString is UTC, eight hours behind the city's date every morning.)
      const f = filters();
      const days = f.from && f.to ? (new Date(f.to) - new Date(f.from)) / 86400000 + 1 : 30;
      const bucket = days > 62 ? "week" : "day";
      const json = async (path, params) => (await api(path, params)).json();
      const [summaryDept, summaryCommunity, series, overdue, hotspots, campaignsData] = await Promise.all([
        json("/api/v1/reports/summary", { ...f, group_by: "department" }),
        json("/api/v1/reports/summary", { ...f, group_by: "community" }),
        json("/api/v1/reports/timeseries", { ...f, metric: "overdue_receipts", group_by: "department", bucket }),
        json("/api/v1/reports/overdue", { community: f.community, category: f.category }),
        json("/api/v1/reports/relapse-hotspots", { ...f, min_relapses: "1" }),
        json("/api/v1/reports/campaigns", { community: f.community }),
      ]);
      if (!f.from && !f.to) {
        $("f-from").value = summaryDept.from;
        $("f-to").value = summaryDept.to;
      }
      state.data = { summaryDept, summaryCommunity, series, overdue, hotspots, campaigns: campaignsData };
      state.updatedAt = new Date();
      render();
      setStatus(readyStatus());
      document.body.dataset.state = "ready";
    } catch (err) {
      if (err.status === 401 || err.status === 403) {
        $("token-panel").hidden = false;
        setStatus(err.status === 401 && !localStorage.getItem(TOKEN_KEY) ? t("needToken") : t("badToken"), true);
        document.body.dataset.state = "need-token";
      } else {
        setStatus(t("failed") + err.message, true);
        document.body.dataset.state = "error";
      }
    }
  }

  function applyLanguage() {
    document.documentElement.lang = state.lang === "zh" ? "zh-CN" : "en";
    for (const node of document.querySelectorAll("[data-i18n]")) node.textContent = t(node.dataset.i18n);
    $("lang-toggle").textContent = t("lang");
    document.title = t("title");
    if (state.reference) {
      fillSelect($("f-community"), state.reference.communities);
      fillSelect($("f-category"), state.reference.categories);
    }
    render();
    if (document.body.dataset.state === "ready" && state.updatedAt) setStatus(readyStatus());
  }

  async function downloadCsv() {
    try {
      const response = await api("/api/v1/reports/summary", { ...filters(), group_by: "department", format: "csv" });
      const blob = await response.blob();
      const link = el("a", { href: URL.createObjectURL(blob), download: `summary-${filters().from}-${filters().to}.csv` });
      document.body.append(link);
      link.click();
      link.remove();
    } catch (err) {
      setStatus(t("failed") + err.message, true);
    }
  }

  // The supervisor's period report for the chosen dates (tables, comparisons, sentences), in the
  // page's language, saved as a printable HTML page or an Excel workbook (the API needs the token,
  // so the file is fetched here and handed to the browser as a download).
  async function downloadPeriodReport(format) {
    try {
      const { from, to } = filters();
      const response = await api("/api/v1/reports/period", { from, to, format, lang: state.lang });
      const blob = await response.blob();
      const name = `period-report-${from}-${to}-${state.lang}.${format}`;
      const link = el("a", { href: URL.createObjectURL(blob), download: name });
      document.body.append(link);
      link.click();
      link.remove();
    } catch (err) {
      setStatus(t("failed") + err.message, true);
    }
  }

  function init() {
    $("token-form").addEventListener("submit", (e) => {
      e.preventDefault();
      localStorage.setItem(TOKEN_KEY, $("token-input").value.trim());
      $("token-input").value = "";
      $("token-panel").hidden = true;
      state.reference = null;
      load();
    });
    $("filter-form").addEventListener("submit", (e) => {
      e.preventDefault();
      load();
    });
    $("forget").addEventListener("click", () => {
      localStorage.removeItem(TOKEN_KEY);
      state.data = null;
      $("token-panel").hidden = false;
      document.body.dataset.state = "need-token";
      setStatus(t("needToken"), true);
    });
    $("csv").addEventListener("click", downloadCsv);
    $("period-html").addEventListener("click", () => downloadPeriodReport("html"));
    $("period-xlsx").addEventListener("click", () => downloadPeriodReport("xlsx"));
    $("lang-toggle").addEventListener("click", () => {
      state.lang = state.lang === "zh" ? "en" : "zh";
      localStorage.setItem(LANG_KEY, state.lang);
      applyLanguage();
    });
    applyLanguage();
    if (localStorage.getItem(TOKEN_KEY)) {
      load();
    } else {
      $("token-panel").hidden = false;
      setStatus(t("needToken"));
      document.body.dataset.state = "need-token";
    }
  }

  document.addEventListener("DOMContentLoaded", init);
})();
