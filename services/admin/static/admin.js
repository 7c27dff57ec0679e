// The admin page holds no token: the operator pastes one; it stays in this browser's localStorage
// and goes only to this service. Chinese first, English on the toggle.
(() => {
  "use strict";
  const TOKEN_KEY = "hazard-admin-token";
  const LANG_KEY = "hazard-admin-lang";
  const TEXT = {
    zh: {
      title: "运行管理", tokenLabel: "管理员（operator）令牌（仅保存在本浏览器）", tokenSave: "保存并加载",
      forget: "清除令牌", people: "人员与令牌", principal: "账号", role: "角色", grid: "网格", department: "部门",
      reporterType: "上报人类型", buildings: "楼栋（逗号分隔）", create: "创建并生成令牌",
      newToken: "新令牌（只显示这一次）：", binding: "绑定", source: "来源", state: "状态",
      roleReporter: "上报人", roleDepartment: "职能部门", roleOperator: "管理员", roleSupervisor: "督办",
      none: "—", gridMember: "网格员", buildingManager: "楼栋长", hotlineOperator: "12345 热线话务员",
      cadreVisit: "干部走访", campaigns: "专项行动", campaign: "行动", window: "起止", targets: "目标",
      departments: "职能部门", name: "名称", audit: "操作记录", when: "时间", who: "操作人", what: "操作",
      object: "对象", active: "有效", revoked: "已吊销", revoke: "吊销", rotate: "轮换", end: "结束行动",
      ended: "已结束", file: "配置文件", database: "数据库", lang: "English", loaded: "已加载",
      created: "已创建", done: "已完成", needToken: "请输入管理员令牌", failed: "操作失败：",
      nameZh: "中文名称", nameEn: "英文名称", startsOn: "开始", endsOn: "结束", categories: "类别（逗号分隔）",
      targetFound: "目标：发现", createCampaign: "创建行动", contact: "升级联系人", phone: "电话",
      createDepartment: "添加部门", setTarget: "改目标", newTarget: "新的“发现”目标：",
    },
    en: {
      title: "Administration", tokenLabel: "Operator token (kept in this browser only)", tokenSave: "Save and load",
      forget: "Forget token", people: "People and tokens", principal: "Principal", role: "Role", grid: "Grid",
      department: "Department", reporterType: "Reporter type", buildings: "Buildings (comma separated)",
      create: "Create and issue token", newToken: "New token (shown once): ", binding: "Bound to",
      source: "Source", state: "State", roleReporter: "Reporter", roleDepartment: "Department",
      roleOperator: "Operator", roleSupervisor: "Supervisor", none: "—", gridMember: "Grid member",
      buildingManager: "Building manager", hotlineOperator: "12345 hotline operator", cadreVisit: "Cadre visit",
      campaigns: "Campaigns", campaign: "Campaign", window: "Window", targets: "Targets",
      departments: "Departments", name: "Name", audit: "Audit log", when: "When", who: "Who", what: "Action",
      object: "Object", active: "active", revoked: "revoked", revoke: "Revoke", rotate: "Rotate",
      end: "End campaign", ended: "ended", file: "token file", database: "database", lang: "中文",
      loaded: "Loaded", created: "Created", done: "Done", needToken: "Paste an operator token", failed: "Failed: ",
      nameZh: "Chinese name", nameEn: "English name", startsOn: "Starts", endsOn: "Ends",
      categories: "Categories (comma separated)", targetFound: "Target: found", createCampaign: "Create campaign",
      contact: "Escalation contact", phone: "Phone", createDepartment: "Add department", setTarget: "Set target",
      newTarget: "New 'found' target: ",
    },
  };
  const state = { lang: localStorage.getItem(LANG_KEY) || "zh", today: null };
  const $ = (id) => document.getElementById(id);
  const t = (key) => TEXT[state.lang][key] || key;

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k.startsWith("data-")) node.setAttribute(k, v);
      else node[k] = v;
    }
    for (const child of children) node.append(child);
    return node;
  }

  function setStatus(text, error) {
    $("status").textContent = text;
    $("status").classList.toggle("error", Boolean(error));
  }

  async function api(method, path, body) {
    const token = localStorage.getItem(TOKEN_KEY);
    if (!token) throw new Error(t("needToken"));
    const init = { method, headers: { Authorization: "Bearer " + token } };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const res = await fetch("/api/v1/admin" + path, init);
    const data = await res.json().catch(() => ({}));
    if (!res.ok) throw new Error((data.error && data.error.message) || res.status);
    return data;
  }

  async function act(fn, message) {
    try {
      await fn();
      setStatus(message || t("done"), false);
      await load();
    } catch (err) {
      setStatus(t("failed") + err.message, true);
    }
  }

  function renderPrincipals(list) {
    const body = $("principals").querySelector("tbody");
    body.replaceChildren();
    for (const p of list) {
      const binding = [p.grid_id, p.department_id, p.reporter_type, (p.building_ids || []).join(",")]
        .filter(Boolean).join(" · ");
      const actions = el("td", {});
      if (p.active) {
        actions.append(
          el("button", { type: "button", className: "rotate", onclick: () => act(async () => showToken(await api("POST", `/principals/${encodeURIComponent(p.principal)}/rotate`))) }, t("rotate")),
          " ",
          el("button", { type: "button", className: "revoke", onclick: () => act(() => api("POST", `/principals/${encodeURIComponent(p.principal)}/revoke`)) }, t("revoke")),
        );
      }
      body.append(el("tr", { "data-principal": p.principal },
        el("td", {}, p.principal), el("td", {}, p.role), el("td", {}, binding || "—"),
        el("td", {}, t(p.source)), el("td", { className: "state" }, p.active ? t("active") : t("revoked")), actions));
    }
  }

  function renderCampaigns(list) {
    const body = $("campaigns").querySelector("tbody");
    body.replaceChildren();
    for (const c of list) {
      const targets = Object.entries(c.targets || {}).filter(([, v]) => v !== null).map(([k, v]) => `${k}: ${v}`).join(", ");
      const actions = el("td", { className: "actions" });
      const ended = state.today && c.ends_on < state.today;
      actions.append(el("button", { type: "button", className: "target", onclick: () => {
        const value = window.prompt(t("newTarget"), c.targets && c.targets.found !== null ? String(c.targets.found) : "");
        if (value === null || value.trim() === "") return;
        act(() => api("PATCH", `/campaigns/${encodeURIComponent(c.id)}`, { targets: { ...c.targets, found: Number(value) } }));
      } }, t("setTarget")), " ");
      if (ended) actions.append(t("ended"));
      else actions.append(el("button", { type: "button", className: "end", onclick: () => act(() => api("POST", `/campaigns/${encodeURIComponent(c.id)}/end`, {})) }, t("end")));
      body.append(el("tr", { "data-campaign": c.id },
        el("td", {}, state.lang === "zh" ? c.name_zh : c.name_en),
        el("td", { className: "window" }, `${c.starts_on} — ${c.ends_on}`), el("td", {}, targets || "—"), actions));
    }
  }

  function renderDepartments(list) {
    const body = $("departments").querySelector("tbody");
    body.replaceChildren();
    for (const d of list) {
      const contacts = (d.contacts || []).map((c) => [c.name, c.phone, c.email].filter(Boolean).join(" ")).join("; ");
      body.append(el("tr", { "data-department": d.id }, el("td", {}, d.id),
        el("td", {}, state.lang === "zh" ? d.name_zh : d.name_en), el("td", {}, contacts || "—")));
    }
  }

  function renderAudit(list) {
    const body = $("audit").querySelector("tbody");
    body.replaceChildren();
    for (const a of list) body.append(el("tr", {}, el("td", {}, new Date(a.at).toLocaleString(state.lang === "zh" ? "zh-CN" : "en-GB", { timeZone: "Asia/Shanghai" })), el("td", {}, a.actor), el("td", {}, a.action), el("td", {}, `${a.entity} ${a.entity_id}`)));
  }

  function showToken(answer) {
    $("new-token-value").textContent = answer.token;
    $("new-token").hidden = false;
  }

  async function load() {
    const [principals, campaigns, departments, audit] = await Promise.all([
      api("GET", "/principals"), api("GET", "/campaigns"), api("GET", "/departments"), api("GET", "/audit?limit=50"),
    ]);
    state.today = new Date().toLocaleDateString("sv-SE", { timeZone: "Asia/Shanghai" });
    renderPrincipals(principals.principals);
    renderCampaigns(campaigns.campaigns);
    renderDepartments(departments.departments);
    renderAudit(audit.audit);
    document.body.dataset.state = "loaded";
  }

  function translate() {
    document.documentElement.lang = state.lang === "zh" ? "zh-CN" : "en";
    for (const node of document.querySelectorAll("[data-i18n]")) node.textContent = t(node.dataset.i18n);
    $("lang-toggle").textContent = t("lang");
  }

  document.addEventListener("DOMContentLoaded", () => {
    translate();
    $("lang-toggle").addEventListener("click", () => {
      state.lang = state.lang === "zh" ? "en" : "zh";
      localStorage.setItem(LANG_KEY, state.lang);
      translate();
      if (localStorage.getItem(TOKEN_KEY)) load().catch((err) => setStatus(err.message, true));
    });
    $("token-form").addEventListener("submit", (event) => {
      event.preventDefault();
      localStorage.setItem(TOKEN_KEY, $("token-input").value.trim());
      act(async () => {}, t("loaded"));
    });
    $("forget").addEventListener("click", () => { localStorage.removeItem(TOKEN_KEY); setStatus(t("needToken"), false); });
    $("principal-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const body = { principal: $("p-id").value.trim(), role: $("p-role").value };
      const grid = $("p-grid").value.trim();
      const dept = $("p-department").value.trim();
      const type = $("p-type").value;
      const buildings = $("p-buildings").value.split(",").map((s) => s.trim()).filter(Boolean);
      if (grid) body.grid_id = grid;
      if (dept) body.department_id = dept;
      if (type) body.reporter_type = type;
      if (buildings.length) body.building_ids = buildings;
      act(async () => showToken(await api("POST", "/principals", body)), t("created"));
    });
    $("campaign-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const body = {
        id: $("c-id").value.trim(), name_zh: $("c-name-zh").value.trim(), name_en: $("c-name-en").value.trim(),
        starts_on: $("c-starts").value, ends_on: $("c-ends").value,
        categories: $("c-categories").value.split(",").map((s) => s.trim()).filter(Boolean),
      };
      if ($("c-found").value !== "") body.targets = { found: Number($("c-found").value) };
      act(() => api("POST", "/campaigns", body), t("created"));
    });
    $("department-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const body = { id: $("d-id").value.trim(), name_zh: $("d-name-zh").value.trim(), name_en: $("d-name-en").value.trim() };
      const contact = $("d-contact").value.trim();
      const phone = $("d-phone").value.trim();
      if (contact) body.contacts = [phone ? { name: contact, phone } : { name: contact }];
      act(() => api("POST", "/departments", body), t("created"));
    });
    if (localStorage.getItem(TOKEN_KEY)) load().catch((err) => setStatus(err.message, true));
    else setStatus(t("needToken"), false);
  });
})();
