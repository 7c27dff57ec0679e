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
      routing: "分派规则", routingHelp: "按顺序匹配：第一条与隐患类别（及社区、网格）相符的规则决定接收部门；部门退回时按其后的规则再分派；没有规则的类别进入管理员队列。修改即时生效，无需重启；已分派的隐患保留原规则。",
      ruleCategory: "隐患类别", ruleCommunity: "社区（可选）", ruleGrid: "网格（可选）", ruleDepartment: "接收部门",
      rulePosition: "顺序（可选）", addRule: "添加规则", saveRule: "保存修改", cancelEdit: "取消修改",
      routingVersion: "规则版本：", filesVersion: "0（配置文件）", order: "顺序", scope: "范围",
      wholeStreet: "全街道", edit: "修改", remove: "删除", ruleAdded: "规则已添加，即时生效",
      ruleChanged: "规则已修改，即时生效", ruleRemoved: "规则已删除，即时生效",
      "f.id": "规则 ID", "f.category": "隐患类别", "f.community_id": "社区", "f.grid_id": "网格",
      "f.department_id": "接收部门", "f.position": "顺序",
      "e.validation_failed": "规则无效，未作任何修改：", "e.rule_conflict": "与其他规则冲突，未作任何修改：",
      "e.rule_exists": "规则 ID 已被使用：", "e.not_found": "该规则已不存在（可能已被他人删除）。",
      "e.invalid": "填写有误：", unknownValue: "不存在“{v}”", gridOutside: "网格“{v}”不在所填社区内",
      neverUsed: "与规则“{v}”重复：同一类别、同一范围已发往同一部门，其中一条永远用不到",
      overrideAfter: "比规则“{v}”更具体，须排在它之前，否则只有在该部门退回时才会用到",
      idTaken: "规则 ID“{v}”已被使用", beyondEnd: "顺序超出范围（最大 {v}）", required: "必填",
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
      routing: "Routing rules", routingHelp: "Matched in order: the first rule whose category (and community, grid) fits a hazard names its department; when that department returns it, the later rules route it again; a category no rule matches goes to the operators' queue. Changes apply at once, without restart; hazards already dispatched keep their rule.",
      ruleCategory: "Hazard category", ruleCommunity: "Community (optional)", ruleGrid: "Grid (optional)",
      ruleDepartment: "Department", rulePosition: "Order (optional)", addRule: "Add rule", saveRule: "Save change",
      cancelEdit: "Cancel change", routingVersion: "Rules version: ", filesVersion: "0 (files)", order: "Order",
      scope: "Where", wholeStreet: "whole street", edit: "Change", remove: "Remove",
      ruleAdded: "Rule added; in force now", ruleChanged: "Rule changed; in force now", ruleRemoved: "Rule removed; in force now",
      "f.id": "Rule id", "f.category": "Category", "f.community_id": "Community", "f.grid_id": "Grid",
      "f.department_id": "Department", "f.position": "Order",
      "e.validation_failed": "The rule is not acceptable; nothing was changed:",
      "e.rule_conflict": "The rule conflicts with another; nothing was changed:", "e.rule_exists": "The rule id is taken:",
      "e.not_found": "That rule no longer exists (someone may have removed it).", "e.invalid": "Please correct:",
      unknownValue: "'{v}' does not exist", gridOutside: "grid '{v}' is not in the community given",
      neverUsed: "duplicates rule '{v}': the same category and place already go to the same department, so one would never be used",
      overrideAfter: "is more specific than rule '{v}' and must come before it, or it is used only when that department returns the hazard",
      idTaken: "rule id '{v}' is taken", beyondEnd: "order beyond the end (at most {v})", required: "required",
    },
  };
  const state = { lang: localStorage.getItem(LANG_KEY) || "zh", today: null, reference: null, departments: [], editing: null };
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
    if (!res.ok) {
      const err = new Error((data.error && data.error.message) || res.status);
      err.status = res.status;
      err.code = data.error && data.error.code;
      err.details = (data.error && data.error.details) || [];
      throw err;
    }
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

  function named(kind, id) {
    const ref = state.reference;
    const list = kind === "department" ? state.departments.map((d) => ({ id: d.id, zh: d.name_zh, en: d.name_en }))
      : (ref && ref[kind === "category" ? "categories" : "communities"]) || [];
    const found = list.find((x) => x.id === id);
    return found ? `${state.lang === "zh" ? found.zh : found.en} (${id})` : id;
  }

  function fillOptions(id, list) {
    $(id).replaceChildren(...list.map((x) => el("option", { value: x.id, label: state.lang === "zh" ? x.zh : x.en })));
  }

  function renderRules(answer) {
    $("routing-version").textContent = answer.version === 0 ? t("filesVersion") : String(answer.version);
    const body = $("rules").querySelector("tbody");
    body.replaceChildren();
    answer.rules.forEach((r, index) => {
      const where = [r.community_id && named("community", r.community_id), r.grid_id].filter(Boolean).join(" · ") || t("wholeStreet");
      const actions = el("td", { className: "actions" },
        el("button", { type: "button", className: "edit", onclick: () => startEdit(r, index + 1) }, t("edit")), " ",
        el("button", { type: "button", className: "remove", onclick: () => ruleAct(() => api("DELETE", `/routing-rules/rules/${encodeURIComponent(r.id)}`), t("ruleRemoved")) }, t("remove")));
      body.append(el("tr", { "data-rule": r.id, className: state.editing === r.id ? "editing" : "" },
        el("td", { className: "position" }, String(index + 1)), el("td", {}, r.id),
        el("td", { className: "category" }, named("category", r.category)), el("td", { className: "scope" }, where),
        el("td", { className: "department" }, named("department", r.department_id)), actions));
    });
  }

  function startEdit(rule, position) {
    showRuleErrors(null);
    state.editing = rule.id;
    $("r-id").value = rule.id;
    $("r-id").readOnly = true;
    $("r-category").value = rule.category;
    $("r-community").value = rule.community_id || "";
    $("r-grid").value = rule.grid_id || "";
    $("r-department").value = rule.department_id;
    $("r-position").value = String(position);
    $("r-save").dataset.i18n = "saveRule";
    $("r-save").textContent = t("saveRule");
    $("r-cancel").hidden = false;
    for (const row of $("rules").querySelectorAll("tr[data-rule]")) row.classList.toggle("editing", row.dataset.rule === rule.id);
    $("r-category").focus();
  }

  function stopEdit() {
    state.editing = null;
    $("rule-form").reset();
    $("r-id").readOnly = false;
    $("r-save").dataset.i18n = "addRule";
    $("r-save").textContent = t("addRule");
    $("r-cancel").hidden = true;
    for (const row of $("rules").querySelectorAll("tr.editing")) row.classList.remove("editing");
  }

  function fieldName(field) {
    const last = String(field || "").split(".").filter((p) => !/^\d+$/.test(p) && p !== "rules").pop() || "";
    return TEXT[state.lang]["f." + last] || last;
  }

  function problemWords(err, d) {
    const fill = (key) => t(key).replace("{v}", d.value === undefined ? "" : String(d.value));
    const problem = String(d.problem || "");
    if (err.code === "rule_exists") return fill("idTaken");
    if (err.code === "rule_conflict") return problem.includes("never be used") ? fill("neverUsed") : fill("overrideAfter");
    if (problem.startsWith("unknown ")) return fill("unknownValue");
    if (problem.includes("is not in")) return fill("gridOutside");
    if (problem.startsWith("at most")) return fill("beyondEnd");
    return problem;
  }

  function showRuleErrors(err) {
    const box = $("rule-errors");
    if (!err) { box.hidden = true; box.querySelector("ul").replaceChildren(); return; }
    $("rule-error-title").textContent = TEXT[state.lang]["e." + err.code] || (t("failed") + err.message);
    box.querySelector("ul").replaceChildren(...(err.details || []).map((d) =>
      el("li", { "data-field": fieldName(d.field) ? String(d.field).split(".").pop() : "" }, `${fieldName(d.field)}：${problemWords(err, d)}`)));
    box.hidden = false;
  }

  async function ruleAct(fn, message) {
    try {
      await fn();
      showRuleErrors(null);
      stopEdit();
      setStatus(message, false);
      await load();
    } catch (err) {
      showRuleErrors(err);
      setStatus(t("failed") + err.message, true);
    }
  }

  function submitRule() {
    const value = (id) => $(id).value.trim();
    const missing = ["r-id", "r-category", "r-department"].filter((id) => !value(id));
    if (missing.length) {
      const field = { "r-id": "id", "r-category": "category", "r-department": "department_id" };
      showRuleErrors({ code: "invalid", message: t("required"), details: missing.map((id) => ({ field: field[id], problem: t("required") })) });
      return;
    }
    const body = { category: value("r-category"), department_id: value("r-department") };
    if (value("r-community")) body.community_id = value("r-community");
    if (value("r-grid")) body.grid_id = value("r-grid");
    if (value("r-position")) body.position = Number(value("r-position"));
    if (state.editing) {
      const id = state.editing;
      ruleAct(() => api("PUT", `/routing-rules/rules/${encodeURIComponent(id)}`, body), t("ruleChanged"));
    } else {
      ruleAct(() => api("POST", "/routing-rules/rules", { id: value("r-id"), ...body }), t("ruleAdded"));
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
    const [principals, campaigns, departments, audit, rules] = await Promise.all([
      api("GET", "/principals"), api("GET", "/campaigns"), api("GET", "/departments"), api("GET", "/audit?limit=50"),
      api("GET", "/routing-rules"),
    ]);
    if (!state.reference) state.reference = await reference();
    state.departments = departments.departments;
    state.today = new Date().toLocaleDateString("sv-SE", { timeZone: "Asia/Shanghai" });
    renderPrincipals(principals.principals);
    renderCampaigns(campaigns.campaigns);
    renderDepartments(departments.departments);
    renderAudit(audit.audit);
    fillOptions("category-options", state.reference.categories || []);
    fillOptions("community-options", state.reference.communities || []);
    fillOptions("department-options", state.departments.map((d) => ({ id: d.id, zh: d.name_zh, en: d.name_en })));
    renderRules(rules);
    document.body.dataset.state = "loaded";
  }

  async function reference() {
    // Names of the categories and communities (the dashboard's reference, readable by an operator).
    const res = await fetch("/api/v1/reports/reference", { headers: { Authorization: "Bearer " + localStorage.getItem(TOKEN_KEY) } });
    return res.ok ? res.json() : { categories: [], communities: [] };
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
    $("rule-form").addEventListener("submit", (event) => { event.preventDefault(); submitRule(); });
    $("r-cancel").addEventListener("click", () => { stopEdit(); showRuleErrors(null); });
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
