// The people's pages: one entry (/app/) where each role signs in with its token and lands on its page.
// Department desk, grid member's phone page (with an offline queue in IndexedDB), operator's queue.
// Plain JavaScript, no build step, no CDN. The token stays in this browser's localStorage and goes
// only to the APIs named in /app/config.json, in the Authorization header.
"use strict";

(function () {
  const TOKEN_KEY = "hazard-app-token";
  const ME_KEY = "hazard-app-me";
  const LANG_KEY = "hazard-reporting-lang"; // shared with the supervisors' dashboard
  const DEFAULT_ZONE = "Asia/Shanghai";
  const MAX_PHOTOS = 10;
  const MAX_PHOTO_BYTES = 10 * 1024 * 1024;
  const PHOTO_TYPES = ["image/jpeg", "image/png", "image/webp", "image/heic", "image/heif"];
  const MAX_EXTENSION_DAYS = 30; // DISPATCH__ / TRACKING__EXTENSIONS__MAX_DAYS_BEYOND (the services refuse beyond it)
  const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

  const TEXT = {
    zh: {
      appTitle: "隐患处置", queuedPhotos: "照片", deskTitle: "部门工作台", gridTitle: "网格员上报", queueTitle0: "调度员待办",
      supervisorTitle: "督办", signOut: "退出", signinTitle: "登录", tokenLabel: "令牌（仅保存在本浏览器）",
      signinButton: "登录", signinHint: "部门、网格员、调度员和督办人员使用各自的令牌登录；页面不包含任何令牌。",
      dashboardLink: "督办看板", needToken: "请输入令牌。", badToken: "令牌无效，请重新输入。",
      expired: "登录已失效（令牌无效或已过期），请重新登录。", forbiddenRole: "此令牌的角色没有对应的页面。",
      network: "网络不可用", deskPending: "待签收", deskOpen: "处理中", pickOne: "选择左侧的一条隐患查看详情。",
      notFound: "未找到该隐患，或您无权查看。", timeLeft: "剩余", overdueBy: "已超时", min: "分钟", hour: "小时",
      day: "天", category: "隐患类别", place: "位置", placeGrid: "本网格中心", placeGps: "手机定位", locate: "获取定位",
      address: "地址", building: "楼栋编号（可选）", description: "隐患描述",
      photos: "照片（最多10张，每张不超过10MB）", onSite: "已当场整改", urgent: "紧急",
      submitReport: "提交（无网络时暂存）", tabReport: "上报", tabOutbox: "待发送", tabMine: "我的上报",
      tabVerify: "待复核", syncNow: "立即发送", queueTitle: "待人工分拨（无匹配规则或被全部退回）",
      returnedTitle: "退单后重新分拨、待接收的隐患", approvalTitle: "待审批的退单",
      rulesTitle: "现行分拨规则（按顺序，先匹配者生效）", grid: "网格", reporter: "上报人", reportedAt: "上报时间",
      receiptDeadline: "签收期限", rectDeadline: "整改期限", state: "状态", department: "部门", history: "处置记录",
      reportPhotos: "现场照片", rectPhotos: "整改照片", acknowledge: "签收", returnTitle: "退单",
      returnReason: "退单理由（3–1000字）", returnButton: "退单", extensionTitle: "申请延期（签收）",
      rectExtensionTitle: "申请延期（整改）", newDeadline: "新的期限", extReason: "延期理由", extButton: "提交延期申请",
      notAvailable: "此功能尚未开通", noteTitle: "进展备注", noteText: "备注内容", noteButton: "添加备注",
      rectTitle: "整改完成，上传整改照片", rectNote: "整改说明", rectButton: "提交整改", done: "已完成",
      acknowledged: "已签收", returned: "已退单", pickCategory: "请选择隐患类别。",
      needDescription: "请填写隐患描述。", tooLong: "内容过长（最多 {n} 字）。", tooShort: "至少 {n} 字。",
      tooManyPhotos: "最多 10 张照片。", photoTooBig: "照片 {name} 超过 10MB。",
      photoType: "照片 {name} 不是 JPEG、PNG、WebP 或 HEIC。", needLocation: "请先获取手机定位，或选择本网格中心。",
      badBuilding: "楼栋编号只能包含字母、数字和 _ . : / -。", needReason: "请填写理由（至少3字）。",
      needDeadline: "请选择新的期限。", deadlinePast: "新的期限必须晚于现在。", needNote: "请填写内容。",
      needPhoto: "请至少上传一张照片。", queuedOk: "已暂存，联网后自动发送。", statusQueued: "待发送",
      statusSending: "发送中", statusAccepted: "已受理", statusError: "需修改", edit: "修改", remove: "删除",
      clear: "清除", online: "网络已连接", offline: "当前离线：上报会暂存在本机，联网后自动发送。",
      locating: "正在定位…", located: "已定位", locateFailed: "无法获取定位：", verifyPass: "复核通过",
      verifyFail: "复核不通过", failNote: "不通过的原因", failPhoto: "现场照片", verifyButton: "提交不通过",
      verified: "已提交复核", none: "暂无", reason: "理由", assign: "分拨", assignTitle: "分拨给部门",
      reassign: "改派", approve: "同意退单", refuse: "驳回退单", refuseReason: "驳回理由", pickDepartment: "请选择部门。",
      rule: "规则", community: "社区", any: "任意", referralNo_rule: "无匹配规则",
      referralAll_candidates_returned: "候选部门全部退回", saved: "已保存", failed: "操作失败：", loading: "加载中…",
      updated: "已更新", onSiteShort: "当场整改", photoMissing: "照片不可用", open: "查看", rectRound: "整改轮次",
      lang: "English", requestedBy: "申请人", lastUpdate: "最近更新", why_routed: "按规则分拨",
      why_rerouted: "退单后重新分拨", why_reassigned: "调度员改派", why_no_rule: "无匹配规则",
      why_all_candidates_returned: "候选部门全部退回",
      deadlineNotAfter: "新的期限必须晚于当前期限（{d}）。", deadlineTooFar: "新的期限最多比当前期限晚 {n} 天。",
      extAwaiting: "延期申请待审批", extApproved: "延期已同意", extRefused: "延期被驳回", requestedDeadline: "申请延至",
      originalDeadline: "原期限", extensionStatus: "延期申请", extApprovalTitle: "待审批的延期申请",
      approveExt: "同意延期", refuseExt: "驳回延期", decisionNote: "审批意见（可选）", stage_receipt: "签收",
      stage_rectification: "整改", urgeTitle: "督办", urgeNote: "督办内容", urgeButton: "督办", urged: "已督办",
      openWorkTitle: "在办事项（可督办）", deadlineInForce: "现行期限", noteSaved: "备注已添加",
      extRequested: "延期申请已提交，等待审批。",
      err_invalid_deadline: "新的期限必须晚于当前期限，且不超过其后 {n} 天。",
      err_extension_awaiting_approval: "已有一条延期申请在等待审批。", err_deadline_passed: "期限已过，不能再申请延期。",
      err_no_extension_request: "该延期申请已被处理。", err_invalid_state: "当前状态不能进行此操作。",
    },
    en: {
      queuedPhotos: "photos",
      appTitle: "Hazard desk", deskTitle: "Department desk", gridTitle: "Grid member", queueTitle0: "Operator's queue",
      supervisorTitle: "Supervisor", signOut: "Sign out", signinTitle: "Sign in",
      tokenLabel: "Token (kept in this browser only)", signinButton: "Sign in",
      signinHint: "Departments, grid members, operators and supervisors sign in with their own token; the page holds none.",
      dashboardLink: "Supervision dashboard", needToken: "Enter a token.", badToken: "This token is not valid; enter another.",
      expired: "Your sign-in has expired (the token is not valid); sign in again.",
      forbiddenRole: "This token's role has no page here.", network: "Network unavailable",
      deskPending: "To acknowledge", deskOpen: "In progress", pickOne: "Pick a hazard on the left to see it.",
      notFound: "No such hazard, or you may not see it.", timeLeft: "left", overdueBy: "overdue by", min: "min",
      hour: "h", day: "d", category: "Category", place: "Place", placeGrid: "Centre of my grid",
      placeGps: "Phone location", locate: "Locate me", address: "Address", building: "Building id (optional)",
      description: "Description", photos: "Photos (at most 10, 10 MB each)", onSite: "Rectified on the spot",
      urgent: "Urgent", submitReport: "Submit (kept here while offline)", tabReport: "Report", tabOutbox: "Outbox",
      tabMine: "My reports", tabVerify: "To verify", syncNow: "Send now",
      queueTitle: "To assign (no rule matched, or every candidate returned it)",
      returnedTitle: "Returned and routed again, awaiting receipt", approvalTitle: "Returns awaiting approval",
      rulesTitle: "Routing rules in force (in order, first match wins)", grid: "Grid", reporter: "Reporter",
      reportedAt: "Reported", receiptDeadline: "Receipt deadline", rectDeadline: "Rectification deadline",
      state: "State", department: "Department", history: "History", reportPhotos: "Photos",
      rectPhotos: "Rectification photos", acknowledge: "Acknowledge", returnTitle: "Return",
      returnReason: "Why return it (3–1000 characters)", returnButton: "Return", extensionTitle: "Request extension (receipt)",
      rectExtensionTitle: "Request extension (rectification)", newDeadline: "New deadline", extReason: "Reason",
      extButton: "Request extension", notAvailable: "Not available yet", noteTitle: "Progress note", noteText: "Note",
      noteButton: "Add note", rectTitle: "Rectified: upload evidence", rectNote: "What was done",
      rectButton: "Record rectification", done: "Done", acknowledged: "Acknowledged", returned: "Returned",
      pickCategory: "Pick a category.", needDescription: "Describe the hazard.",
      tooLong: "Too long (at most {n} characters).", tooShort: "At least {n} characters.",
      tooManyPhotos: "At most 10 photos.", photoTooBig: "Photo {name} is larger than 10 MB.",
      photoType: "Photo {name} is not a JPEG, PNG, WebP or HEIC.",
      needLocation: "Locate the phone first, or pick the centre of your grid.",
      badBuilding: "A building id holds only letters, digits and _ . : / -.", needReason: "Give a reason (3 characters at least).",
      needDeadline: "Pick the new deadline.", deadlinePast: "The new deadline must be in the future.",
      needNote: "Write something.", needPhoto: "Add at least one photo.",
      queuedOk: "Kept on this phone; it is sent when the network returns.", statusQueued: "Queued",
      statusSending: "Sending", statusAccepted: "Accepted", statusError: "To fix", edit: "Edit", remove: "Delete",
      clear: "Clear", online: "Online", offline: "Offline: reports stay on this phone and are sent when the network returns.",
      locating: "Locating…", located: "Located", locateFailed: "Cannot locate: ", verifyPass: "Passed",
      verifyFail: "Failed", failNote: "Why it failed", failPhoto: "Photo", verifyButton: "Record failure",
      verified: "Verification recorded", none: "None", reason: "Reason", assign: "Assign", assignTitle: "Assign to",
      reassign: "Reassign", approve: "Approve return", refuse: "Refuse return", refuseReason: "Why refuse",
      pickDepartment: "Pick a department.", rule: "Rule", community: "Community", any: "any",
      referralNo_rule: "No rule matched", referralAll_candidates_returned: "Every candidate returned it",
      saved: "Saved", failed: "Failed: ", loading: "Loading…", updated: "Updated", onSiteShort: "on the spot",
      photoMissing: "photo unavailable", open: "Open", rectRound: "Round", lang: "中文", requestedBy: "Requested by",
      lastUpdate: "Updated", why_routed: "routed by the rules", why_rerouted: "routed again after a return",
      why_reassigned: "reassigned by an operator", why_no_rule: "no rule matched",
      why_all_candidates_returned: "every candidate returned it",
      deadlineNotAfter: "The new deadline must be after the one in force ({d}).",
      deadlineTooFar: "At most {n} days beyond the deadline in force.", extAwaiting: "Extension awaiting approval",
      extApproved: "Extension approved", extRefused: "Extension refused", requestedDeadline: "Requested",
      originalDeadline: "Original deadline", extensionStatus: "Extension", extApprovalTitle: "Extension requests awaiting approval",
      approveExt: "Approve extension", refuseExt: "Refuse extension", decisionNote: "Note (optional)",
      stage_receipt: "receipt", stage_rectification: "rectification", urgeTitle: "Urge", urgeNote: "What to urge",
      urgeButton: "Urge", urged: "Urged", openWorkTitle: "Open work (to urge)", deadlineInForce: "Deadline in force",
      noteSaved: "Note added", extRequested: "Extension requested; awaiting approval.",
      err_invalid_deadline: "The new deadline must be after the one in force and at most {n} days beyond it.",
      err_extension_awaiting_approval: "A request already awaits a decision.",
      err_deadline_passed: "The deadline has passed; no extension may be asked.",
      err_no_extension_request: "This request was already decided.", err_invalid_state: "Not possible in this state.",
    },
  };
  const STATES = {
    zh: {
      new: "新建", reported: "待分拨", referred_to_operators: "调度员处理中", dispatched: "待签收",
      acknowledged: "已签收", rectification_ordered: "待整改", rectified: "已整改待复核",
      verification_failed: "复核未通过", verified: "已复核", closed: "已销号", duplicate: "重复上报",
    },
    en: {
      new: "New", reported: "Awaiting dispatch", referred_to_operators: "With operators", dispatched: "Awaiting receipt",
      acknowledged: "Acknowledged", rectification_ordered: "Awaiting rectification", rectified: "Rectified, to verify",
      verification_failed: "Failed verification", verified: "Verified", closed: "Closed", duplicate: "Duplicate",
    },
  };
  const EVENTS = {
    zh: {
      "hazard.reported": "上报", "hazard.duplicate_linked": "识别为重复", "hazard.duplicate_unlinked": "取消重复",
      "hazard.dispatched": "分拨", "hazard.referred_to_operators": "转调度员", "hazard.acknowledged": "签收",
      "hazard.returned": "退单", "hazard.receipt_overdue": "超时未签收", "hazard.escalated": "升级督办",
      "hazard.rectification_ordered": "下达整改", "hazard.rectified": "整改完成",
      "hazard.rectification_overdue": "整改超期", "hazard.verified": "复核", "hazard.closed": "销号",
      "hazard.relapsed": "回潮", "hazard.urged": "督办", "hazard.extension_requested": "申请延期",
      "hazard.extension_decided": "延期审批", "hazard.progress_noted": "进展备注",
    },
    en: {},
  };
  const GROUPS = { zh: { fire: "消防", public_security: "治安", other: "其他" }, en: { fire: "Fire", public_security: "Public security", other: "Other" } };

  const state = {
    lang: localStorage.getItem(LANG_KEY) || "zh",
    token: localStorage.getItem(TOKEN_KEY),
    cfg: null, ref: null, me: null, routes: {}, photos: new Map(), timer: null,
    desk: { pending: [], open: [], seen: null, selected: null },
    grid: { tab: "report", gps: null, syncing: false, mine: [], verify: [] },
    queue: { items: [], rerouted: [], approvals: [], rules: null, urged: new Set() },
  };
  const $ = (id) => document.getElementById(id);
  const t = (key, vars) => {
    let s = TEXT[state.lang][key] || TEXT.zh[key] || key;
    for (const [k, v] of Object.entries(vars || {})) s = s.replace("{" + k + "}", v);
    return s;
  };

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? "" : String(v));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  // ------------------------------------------------------------------ names and times

  const named = (list, id) => {
    const found = (list || []).find((x) => x.id === id);
    return found ? found[state.lang] || found.zh : id || "—";
  };
  const categoryName = (id) => named(state.ref && state.ref.categories, id);
  const departmentName = (id) => named(state.ref && state.ref.departments, id);
  const gridName = (id) => named(state.ref && state.ref.grids, id);
  const stateName = (s) => STATES[state.lang][s] || s;
  const eventName = (type) => EVENTS[state.lang][type] || type.replace("hazard.", "").replace(/_/g, " ");
  const zone = () => (state.ref && state.ref.timezone) || DEFAULT_ZONE;

  function cityTime(value) {
    if (!value) return "—";
    const f = Object.fromEntries(new Intl.DateTimeFormat("en-CA", {
      timeZone: zone(), year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", hourCycle: "h23",
    }).formatToParts(new Date(value)).map((p) => [p.type, p.value]));
    return `${f.year}-${f.month}-${f.day} ${f.hour}:${f.minute}`;
  }

  function duration(ms) {
    const minutes = Math.round(Math.abs(ms) / 60000);
    if (minutes < 60) return `${minutes} ${t("min")}`;
    if (minutes < 48 * 60) return `${Math.floor(minutes / 60)} ${t("hour")} ${minutes % 60} ${t("min")}`;
    return `${Math.floor(minutes / 1440)} ${t("day")} ${Math.floor((minutes % 1440) / 60)} ${t("hour")}`;
  }

  function timeLeft(deadline, overdue) {
    if (!deadline) return el("span", { class: "left" }, "—");
    const ms = new Date(deadline).getTime() - Date.now();
    const late = overdue || ms < 0;
    const text = late ? `${t("overdueBy")} ${duration(ms)}` : `${t("timeLeft")} ${duration(ms)}`;
    return el("span", { class: "left" + (late ? " late" : ms < 30 * 60000 ? " soon" : ""), "data-deadline": deadline }, text);
  }

  function uuid4() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    const b = crypto.getRandomValues(new Uint8Array(16));
    b[6] = (b[6] & 0x0f) | 0x40; b[8] = (b[8] & 0x3f) | 0x80;
    const h = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
  }

  // ------------------------------------------------------------------ API

  class ApiError extends Error {
    constructor(message, status, code, details) {
      super(message);
      this.status = status; this.code = code; this.details = details || [];
      this.network = status === 0;
    }
  }

  async function api(service, path, opts) {
    opts = opts || {};
    const base = service === "reporting" ? "" : state.cfg[service];
    const url = new URL(base + path, window.location.origin);
    for (const [k, v] of Object.entries(opts.params || {})) {
      if (Array.isArray(v)) v.forEach((x) => url.searchParams.append(k, x));
      else if (v !== undefined && v !== null && v !== "") url.searchParams.set(k, v);
    }
    const headers = { Authorization: "Bearer " + (opts.token || state.token) };
    let body;
    if (opts.json !== undefined) { headers["Content-Type"] = "application/json"; body = JSON.stringify(opts.json); }
    if (opts.form) body = opts.form;
    let response;
    try {
      response = await fetch(url, { method: opts.method || "GET", headers, body });
    } catch (_) {
      throw new ApiError(t("network"), 0, "network");
    }
    if (response.status === 401 && !opts.signingIn) {
      signOut(t("expired"));
      throw new ApiError(t("expired"), 401, "unauthenticated");
    }
    if (!response.ok) {
      let message = response.statusText, code = String(response.status), details = [];
      try {
        const err = (await response.json()).error;
        message = err.message; code = err.code; details = err.details || [];
      } catch (_) { /* not JSON */ }
      throw new ApiError(message, response.status, code, details);
    }
    if (opts.blob) return response.blob();
    return response.status === 204 ? null : response.json();
  }

  async function routesOf(service) {
    // The paths a service offers (its OpenAPI), to show buttons of routes not deployed yet as disabled.
    try {
      const response = await fetch(state.cfg[service] + "/openapi.json");
      if (!response.ok) return null;
      return new Set(Object.entries((await response.json()).paths || {})
        .flatMap(([p, ops]) => Object.keys(ops).map((m) => m.toUpperCase() + " " + p)));
    } catch (_) {
      return null;
    }
  }

  const ROUTES = {
    receiptExtension: ["dispatch", "POST /api/v1/dispatches/{dispatch_id}/extension"],
    rectExtension: ["tracking", "POST /api/v1/hazards/{hazard_id}/rectification/extension"],
    notes: ["tracking", "POST /api/v1/hazards/{hazard_id}/notes"],
  };

  async function loadRoutes() {
    const [dispatch, tracking] = await Promise.all([routesOf("dispatch"), routesOf("tracking")]);
    const known = { dispatch, tracking };
    for (const [name, [service, route]] of Object.entries(ROUTES)) {
      const paths = known[service];
      state.routes[name] = paths === null ? true : paths.has(route);
    }
  }

  // ------------------------------------------------------------------ photos

  function isOurPhoto(url) {
    return typeof url === "string" && url.startsWith(state.cfg.intake + "/api/v1/photos/");
  }

  async function photoBlobUrl(url) {
    // Photos need the bearer token, so they are fetched and shown from blob: URLs.
    const key = url + "/thumbnail";
    if (!state.photos.has(key)) {
      const path = key.slice(state.cfg.intake.length);
      // A photo not visible yet (intake learns the department from the dispatch event) is asked again later.
      state.photos.set(key, api("intake", path, { blob: true }).then((b) => URL.createObjectURL(b))
        .catch((err) => { state.photos.delete(key); throw err; }));
    }
    return state.photos.get(key);
  }

  function thumbs(urls) {
    const box = el("div", { class: "thumbs" });
    for (const url of urls || []) {
      if (isOurPhoto(url)) {
        const img = el("img", { alt: t("reportPhotos"), "data-photo": url, loading: "lazy" });
        box.append(img);
        photoBlobUrl(url).then((src) => { img.src = src; }).catch(() => { img.alt = t("photoMissing"); img.classList.add("missing"); });
      } else if (/^https?:\/\//.test(url)) {
        box.append(el("a", { class: "ext", href: url, target: "_blank", rel: "noopener noreferrer" }, url.split("/").pop() || url));
      }
    }
    return box;
  }

  async function uploadPhotos(files, hazardId) {
    const urls = [];
    for (const file of files) {
      const form = new FormData();
      form.append("file", file, file.name || "photo.jpg");
      if (hazardId) form.append("hazard_id", hazardId);
      urls.push((await api("intake", "/api/v1/photos", { method: "POST", form })).url);
    }
    return urls;
  }

  // ------------------------------------------------------------------ forms

  function fieldError(input, message) {
    const box = $(input.id + "-error");
    if (box) box.textContent = message || "";
    if (message) input.setAttribute("aria-invalid", "true");
    else input.removeAttribute("aria-invalid");
    return !message;
  }

  function checkText(input, { min = 1, max = 2000, empty = "needNote" } = {}) {
    const value = input.value.trim();
    if (!value) return fieldError(input, t(empty));
    if (value.length < min) return fieldError(input, t("tooShort", { n: min }));
    if (value.length > max) return fieldError(input, t("tooLong", { n: max }));
    return fieldError(input, "");
  }

  function checkPhotos(input, { required = false } = {}) {
    const files = [...(input.files || [])];
    if (required && !files.length) return fieldError(input, t("needPhoto"));
    if (files.length > MAX_PHOTOS) return fieldError(input, t("tooManyPhotos"));
    for (const f of files) {
      if (f.size > MAX_PHOTO_BYTES) return fieldError(input, t("photoTooBig", { name: f.name }));
      if (f.type && !PHOTO_TYPES.includes(f.type)) return fieldError(input, t("photoType", { name: f.name }));
    }
    return fieldError(input, "");
  }

  function serverErrorTo(form, err, fallbackInput) {
    // Put the API's refusal next to the field it names (details[].field), else under the form.
    const details = err.details || [];
    let placed = false;
    const known = TEXT[state.lang]["err_" + err.code];
    if (known) {
      const input = err.code === "invalid_deadline" ? form.querySelector('[name="deadline"]') : null;
      const text = t("err_" + err.code, { n: MAX_EXTENSION_DAYS });
      if (input) fieldError(input, text); else setStatus(form.querySelector(".status"), text, true);
      return;
    }
    for (const d of details) {
      const field = String(d.field || (d.loc || []).slice(-1)[0] || "");
      const input = form.querySelector(`[name="${field}"]`);
      if (input) { fieldError(input, d.problem || err.message); placed = true; }
    }
    if (!placed && fallbackInput) { fieldError(fallbackInput, err.message); placed = true; }
    if (!placed) setStatus(form.querySelector(".status"), t("failed") + err.message, true);
  }

  function setStatus(node, text, error) {
    if (!node) return;
    node.textContent = text || "";
    node.classList.toggle("error", !!error);
  }

  function actionForm(id, title, fields, button, onSubmit, { disabled = false } = {}) {
    const form = el("form", { id, novalidate: true, "data-available": disabled ? "false" : "true" });
    form.append(el("h3", {}, title));
    for (const f of fields) {
      const inputId = `${id}-${f.name}`;
      form.append(el("label", { for: inputId }, f.label));
      let input;
      if (f.type === "textarea") input = el("textarea", { id: inputId, name: f.name, rows: 3, disabled });
      else if (f.type === "select") {
        input = el("select", { id: inputId, name: f.name, disabled }, el("option", { value: "" }, "—"),
          (f.options || []).map((o) => el("option", { value: o.id }, o.label)));
      } else input = el("input", { id: inputId, name: f.name, type: f.type || "text", disabled,
        accept: f.accept, multiple: f.multiple, capture: f.capture });
      form.append(input, el("p", { class: "field-error", id: inputId + "-error", role: "alert" }));
    }
    form.append(el("div", { class: "buttons" }, el("button", { type: "submit", disabled, title: disabled ? t("notAvailable") : null }, button)));
    if (disabled) form.append(el("p", { class: "hint" }, t("notAvailable")));
    form.append(el("p", { class: "status", role: "status" }));
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const submit = form.querySelector("button[type=submit]");
      submit.disabled = true;
      try {
        const ok = await onSubmit(form);
        if (ok !== false) setStatus(form.querySelector(".status"), t("saved"));
      } catch (err) {
        if (err.status === 405 || (err.status === 404 && err.code !== "not_found")) {
          form.dataset.available = "false";
          setStatus(form.querySelector(".status"), t("notAvailable"), true);
          return;
        }
        if (err.status !== 401) serverErrorTo(form, err);
      } finally {
        if (form.dataset.available !== "false") submit.disabled = false;
      }
    });
    return form;
  }

  // ------------------------------------------------------------------ sign-in and pages

  function applyText() {
    document.documentElement.lang = state.lang === "zh" ? "zh-CN" : "en";
    for (const node of document.querySelectorAll("[data-i18n]")) node.textContent = t(node.dataset.i18n);
    $("lang-toggle").textContent = t("lang");
  }

  function showOnly(page) {
    for (const id of ["signin", "desk", "grid", "queue"]) $(id).hidden = id !== page;
    document.body.dataset.page = page;
    $("sign-out").hidden = page === "signin";
  }

  function banner(text) {
    $("banner").textContent = text || "";
    $("banner").hidden = !text;
  }

  function signOut(reason) {
    localStorage.removeItem(TOKEN_KEY);
    localStorage.removeItem(ME_KEY);
    state.token = null; state.me = null;
    if (state.timer) clearInterval(state.timer);
    state.timer = null;
    $("who").textContent = "";
    $("page-title").textContent = t("appTitle");
    showOnly("signin");
    banner(reason || "");
    if (reason) fieldError($("token-input"), reason);
  }

  async function signIn(token) {
    const me = await api("reporting", "/api/v1/whoami", { token, signingIn: true });
    localStorage.setItem(TOKEN_KEY, token);
    localStorage.setItem(ME_KEY, JSON.stringify(me));
    state.token = token;
    state.me = me;
    await enter();
  }

  async function enter() {
    banner("");
    const me = state.me;
    const scope = me.role === "department" ? departmentName(me.department_id) : me.role === "reporter" ? gridName(me.grid_id) : "";
    $("who").textContent = `${me.principal}${scope ? " · " + scope : ""}`;
    if (state.timer) clearInterval(state.timer);
    if (me.role === "department") {
      $("page-title").textContent = t("deskTitle");
      showOnly("desk");
      await loadRoutes();
      await deskRefresh();
      await deskRoute();
      state.timer = setInterval(() => deskRefresh().then(detailIfIdle).catch(() => {}), state.cfg.poll_ms);
    } else if (me.role === "reporter") {
      $("page-title").textContent = t("gridTitle");
      showOnly("grid");
      await gridEnter();
      state.timer = setInterval(() => gridTick().catch(() => {}), state.cfg.poll_ms);
    } else if (me.role === "operator" || me.role === "supervisor") {
      $("page-title").textContent = me.role === "operator" ? t("queueTitle0") : t("supervisorTitle");
      showOnly("queue");
      await queueRefresh();
      state.timer = setInterval(() => queueRefresh().catch(() => {}), state.cfg.poll_ms);
    } else {
      signOut(t("forbiddenRole"));
    }
  }

  // ------------------------------------------------------------------ department desk

  function dispatchCard(d, fresh) {
    const r = d.report || {};
    return el("li", {
      class: "card" + (fresh ? " fresh" : "") + (state.desk.selected === d.hazard_id ? " selected" : ""),
      "data-hazard-id": d.hazard_id, "data-dispatch-id": d.dispatch_id, tabindex: 0,
      onclick: () => { location.hash = "#/hazard/" + d.hazard_id; },
    },
    el("div", { class: "row1" }, el("span", { class: "cat" }, categoryName(d.category)), timeLeft(d.receipt_deadline, d.overdue)),
    el("p", { class: "desc" }, r.description || "—"),
    el("div", { class: "meta" }, [r.address, gridName(d.grid_id), r.reporter_id].filter(Boolean).join(" · ")),
    (r.photos || []).length ? thumbs(r.photos.slice(0, 3)) : null);
  }

  function caseCard(c) {
    return el("li", {
      class: "card" + (state.desk.selected === c.hazard_id ? " selected" : ""), "data-hazard-id": c.hazard_id, tabindex: 0,
      onclick: () => { location.hash = "#/hazard/" + c.hazard_id; },
    },
    el("div", { class: "row1" }, el("span", { class: "cat" }, categoryName(c.category)),
      c.state === "rectification_ordered" ? timeLeft(c.rectification_deadline, c.rectification_overdue) : el("span", { class: "badge" }, stateName(c.state))),
    el("div", { class: "meta" }, [stateName(c.state), gridName(c.grid_id), cityTime(c.reported_at)].join(" · ")));
  }

  async function deskRefresh() {
    const [pending, open] = await Promise.all([
      api("dispatch", "/api/v1/dispatches", { params: { status: "pending", limit: 200 } }),
      api("tracking", "/api/v1/hazards", { params: { open: "true", limit: 100 } }),
    ]);
    // Sorted by time left to the receipt deadline (the API's order: oldest deadline first).
    const items = pending.items.slice().sort((a, b) => a.receipt_deadline.localeCompare(b.receipt_deadline));
    const seen = state.desk.seen;
    state.desk.pending = items;
    state.desk.open = open.items.filter((c) => c.state !== "dispatched");
    state.desk.seen = new Set(items.map((d) => d.dispatch_id));
    $("pending-list").replaceChildren(...(items.length ? items.map((d) => dispatchCard(d, seen !== null && !seen.has(d.dispatch_id))) : [el("li", { class: "empty" }, t("none"))]));
    $("open-list").replaceChildren(...(state.desk.open.length ? state.desk.open.map(caseCard) : [el("li", { class: "empty" }, t("none"))]));
    $("pending-count").textContent = items.length;
    $("open-count").textContent = state.desk.open.length;
    setStatus($("desk-status"), `${t("updated")} ${cityTime(new Date())}`);
  }

  async function detailIfIdle() {
    // The case moves on by events (e.g. the rectification order after 签收): show it, unless the user is typing.
    const panel = $("detail");
    const busy = panel.contains(document.activeElement) ||
      [...panel.querySelectorAll("input, textarea, select")].some((i) => (i.type === "file" ? i.files.length : i.value) || i.getAttribute("aria-invalid") === "true");
    if (state.desk.selected && !busy) await openDetail(state.desk.selected);
  }

  async function deskRoute() {
    const match = /^#\/hazard\/(.+)$/.exec(location.hash);
    if (match) await openDetail(decodeURIComponent(match[1]));
  }

  function timelineExtra(e) {
    // Urgings, extension requests and decisions, progress notes: what the department must read.
    const d = e.details || {};
    const stage = d.stage ? t("stage_" + d.stage) : null;
    if (e.event_type === "hazard.urged") return [stage, d.note];
    if (e.event_type === "hazard.extension_requested") {
      return [stage, `${t("originalDeadline")} ${cityTime(d.current_deadline || d.original_deadline)}`,
        `${t("requestedDeadline")} ${cityTime(d.requested_deadline)}`, d.reason];
    }
    if (e.event_type === "hazard.extension_decided") {
      return [stage, d.approved ? t("extApproved") : t("extRefused"), `${t("deadlineInForce")} ${cityTime(d.deadline)}`, d.note];
    }
    if (e.event_type === "hazard.progress_noted") return [d.note];
    return null;
  }

  function timelineList(entries) {
    return el("ol", { class: "timeline" }, (entries || []).map((e) => {
      const d = e.details || {};
      const special = timelineExtra(e);
      const extra = special ? special.filter(Boolean).join(" · ") : [d.department_id && departmentName(d.department_id), d.reason && (TEXT[state.lang]["why_" + d.reason] || d.reason), d.note, d.passed === true ? t("verifyPass") : d.passed === false ? t("verifyFail") : null,
        d.deadline && `${t("rectDeadline")} ${cityTime(d.deadline)}`].filter(Boolean).join(" · ");
      return el("li", { "data-event": e.event_type },
        el("span", { class: "when" }, cityTime(e.occurred_at)), " ", el("strong", {}, eventName(e.event_type)),
        " ", el("span", { class: "muted" }, e.actor || ""), extra ? el("div", {}, extra) : null,
        (d.photos || []).length ? thumbs(d.photos) : null);
    }));
  }

  function originalOf(current, original, id) {
    // An approved extension: the deadline in force, and the one first frozen beside it.
    if (!original || !current || new Date(original).getTime() === new Date(current).getTime()) return null;
    return el("span", { class: "muted original", id, "data-deadline": original }, ` (${t("originalDeadline")} ${cityTime(original)})`);
  }

  function extensionFacts(request, stage) {
    if (!request) return [];
    const word = { awaiting_approval: t("extAwaiting"), approved: t("extApproved"), refused: t("extRefused") }[request.status] || request.status;
    return [el("dt", {}, state.lang === "zh" ? `${t("extensionStatus")}（${t("stage_" + stage)}）` : `${t("extensionStatus")} (${t("stage_" + stage)})`),
      el("dd", { id: `${stage}-extension`, "data-status": request.status },
        el("span", { class: "badge ext " + request.status }, word), " ",
        [`${t("requestedDeadline")} ${cityTime(request.requested_deadline)}`, request.reason,
          request.decided_by ? `${request.decided_by}${request.note ? "：" + request.note : ""}` : null].filter(Boolean).join(" · "))];
  }

  function extensionForm(id, title, current, send) {
    // The new deadline is checked here as the services do: after the one in force, at most 30 days beyond it.
    return actionForm(id, title, [
      { name: "deadline", label: t("newDeadline"), type: "datetime-local" }, { name: "reason", label: t("extReason"), type: "textarea" },
    ], t("extButton"), async (form) => {
      const deadline = form.elements.deadline, reason = form.elements.reason;
      const when = deadline.value ? new Date(deadline.value) : null;
      const now = new Date(current).getTime();
      const problem = !when || isNaN(when.getTime()) ? t("needDeadline")
        : when.getTime() <= Date.now() ? t("deadlinePast")
          : when.getTime() <= now ? t("deadlineNotAfter", { d: cityTime(current) })
            : when.getTime() > now + MAX_EXTENSION_DAYS * 86400000 ? t("deadlineTooFar", { n: MAX_EXTENSION_DAYS }) : "";
      const ok = [fieldError(deadline, problem), checkText(reason, { min: 3, max: 1000, empty: "needReason" })].every(Boolean);
      if (!ok) return false;
      await send({ deadline: when.toISOString(), reason: reason.value.trim() });
    }, { disabled: !send });
  }

  async function openDetail(hazardId) {
    const panel = $("detail");
    state.desk.selected = hazardId;
    for (const c of document.querySelectorAll("#desk .card")) c.classList.toggle("selected", c.dataset.hazardId === hazardId);
    const notFound = () => panel.replaceChildren(el("p", { class: "status error", "data-not-found": hazardId }, t("notFound")));
    if (!UUID_RE.test(hazardId)) return notFound();
    panel.replaceChildren(el("p", { class: "muted" }, t("loading")));
    let kase = null, dispatch = state.desk.pending.find((d) => d.hazard_id === hazardId) || null;
    try {
      kase = await api("tracking", `/api/v1/hazards/${hazardId}`);
    } catch (err) {
      if (err.status !== 404) { panel.replaceChildren(el("p", { class: "status error" }, t("failed") + err.message)); return; }
    }
    if (!dispatch && kase && kase.dispatch_id) {
      try { dispatch = await api("dispatch", `/api/v1/dispatches/${kase.dispatch_id}`); } catch (err) { if (err.status !== 404) throw err; }
    }
    if (!kase && !dispatch) return notFound();
    if (state.desk.selected !== hazardId) return;
    const reported = kase ? (kase.timeline.find((e) => e.event_type === "hazard.reported") || {}).details || {} : {};
    const report = (dispatch && dispatch.report) || {};
    const description = report.description || reported.description || "—";
    const address = report.address || (kase && kase.location.address) || "—";
    const photos = report.photos || reported.photos || [];
    const rectPhotos = kase ? kase.timeline.filter((e) => e.event_type === "hazard.rectified").flatMap((e) => e.details.photos || []) : [];
    const category = (kase && kase.category) || (dispatch && dispatch.category);
    const facts = el("dl", { class: "facts" },
      el("dt", {}, t("state")), el("dd", { "data-state": kase ? kase.state : "dispatched" }, stateName(kase ? kase.state : "dispatched")),
      el("dt", {}, t("place")), el("dd", {}, address),
      el("dt", {}, t("grid")), el("dd", {}, gridName((kase && kase.grid_id) || (dispatch && dispatch.grid_id))),
      el("dt", {}, t("reporter")), el("dd", {}, report.reporter_id || (kase && kase.reporter_id) || "—"),
      el("dt", {}, t("reportedAt")), el("dd", {}, cityTime(kase && kase.reported_at)),
      el("dt", {}, t("receiptDeadline")), el("dd", { id: "receipt-deadline", "data-deadline": dispatch ? dispatch.receipt_deadline : null },
        dispatch ? [cityTime(dispatch.receipt_deadline), " ", dispatch.status === "pending" ? timeLeft(dispatch.receipt_deadline, dispatch.overdue) : "",
          originalOf(dispatch.receipt_deadline, dispatch.original_receipt_deadline, "receipt-original")] : "—"),
      extensionFacts(dispatch && dispatch.extension_request, "receipt"),
      el("dt", {}, t("rectDeadline")), el("dd", { id: "rect-deadline", "data-deadline": kase ? kase.deadlines.rectification : null },
        kase && kase.deadlines.rectification ? [cityTime(kase.deadlines.rectification), " ", kase.state === "rectification_ordered" ? timeLeft(kase.deadlines.rectification, kase.deadlines.rectification_overdue) : "",
          originalOf(kase.deadlines.rectification, kase.deadlines.rectification_original, "rect-original")] : "—"),
      extensionFacts(kase && kase.extension_requests && kase.extension_requests.rectification, "rectification"));
    const actions = el("div", { class: "actions" });
    const after = async () => { await deskRefresh(); await openDetail(hazardId); };
    if (dispatch && dispatch.status === "pending") {
      actions.append(el("div", { class: "buttons" }, el("button", { type: "button", id: "ack-button", onclick: async (ev) => {
        ev.target.disabled = true;
        try { await api("dispatch", `/api/v1/dispatches/${dispatch.dispatch_id}/acknowledge`, { method: "POST" }); await after(); }
        catch (err) { ev.target.disabled = false; if (err.status !== 401) setStatus($("ack-status"), t("failed") + err.message, true); }
      } }, t("acknowledge"))), el("p", { class: "status", id: "ack-status", role: "status" }));
      const waiting = dispatch.extension_request && dispatch.extension_request.status === "awaiting_approval";
      if (waiting) actions.append(el("p", { class: "status", id: "extension-waiting" }, t("extRequested")));
      else {
        actions.append(extensionForm("extension-form", t("extensionTitle"), dispatch.receipt_deadline, state.routes.receiptExtension ? async (body) => {
          await api("dispatch", `/api/v1/dispatches/${dispatch.dispatch_id}/extension`, { method: "POST", json: body });
          await after();
        } : null));
      }
    }
    if (dispatch && (dispatch.status === "pending" || dispatch.status === "acknowledged") && !(kase && kase.closed)) {
      actions.append(actionForm("return-form", t("returnTitle"), [{ name: "reason", label: t("returnReason"), type: "textarea" }], t("returnButton"), async (form) => {
        if (!checkText(form.elements.reason, { min: 3, max: 1000, empty: "needReason" })) return false;
        await api("dispatch", `/api/v1/dispatches/${dispatch.dispatch_id}/return`, { method: "POST", json: { reason: form.elements.reason.value.trim() } });
        location.hash = "";
        state.desk.selected = null;
        await deskRefresh();
        panel.replaceChildren(el("p", { class: "status" }, t("returned")));
      }));
    }
    if (kase && kase.state === "rectification_ordered") {
      actions.append(actionForm("rect-form", t("rectTitle"), [
        { name: "note", label: t("rectNote"), type: "textarea" },
        { name: "photos", label: t("photos"), type: "file", accept: PHOTO_TYPES.join(","), multiple: true, capture: "environment" },
      ], t("rectButton"), async (form) => {
        const ok = [checkText(form.elements.note, { max: 2000 }), checkPhotos(form.elements.photos, { required: true })].every(Boolean);
        if (!ok) return false;
        let urls;
        try { urls = await uploadPhotos([...form.elements.photos.files], hazardId); }
        catch (err) { if (err.status !== 401) fieldError(form.elements.photos, err.message); return false; }
        await api("tracking", `/api/v1/hazards/${hazardId}/rectification`, { method: "POST", json: { note: form.elements.note.value.trim(), photos: urls } });
        await after();
      }));
      const rectRequest = kase.extension_requests && kase.extension_requests.rectification;
      if (rectRequest && rectRequest.status === "awaiting_approval") actions.append(el("p", { class: "status", id: "rect-extension-waiting" }, t("extRequested")));
      else {
        actions.append(extensionForm("rect-extension-form", t("rectExtensionTitle"), kase.deadlines.rectification, state.routes.rectExtension ? async (body) => {
          await api("tracking", `/api/v1/hazards/${hazardId}/rectification/extension`, { method: "POST", json: body });
          await after();
        } : null));
      }
    }
    if (kase && !kase.closed) {
      actions.append(actionForm("note-form", t("noteTitle"), [
        { name: "note", label: t("noteText"), type: "textarea" },
        { name: "photos", label: t("photos"), type: "file", accept: PHOTO_TYPES.join(","), multiple: true },
      ], t("noteButton"), async (form) => {
        const ok = [checkText(form.elements.note, { max: 2000 }), checkPhotos(form.elements.photos)].every(Boolean);
        if (!ok) return false;
        const urls = await uploadPhotos([...form.elements.photos.files], hazardId);
        const body = { note: form.elements.note.value.trim() };
        if (urls.length) body.photos = urls;
        await api("tracking", `/api/v1/hazards/${hazardId}/notes`, { method: "POST", json: body });
        await after();
      }, { disabled: !state.routes.notes }));
    }
    panel.replaceChildren(...[
      el("h2", { "data-hazard-id": hazardId }, categoryName(category)),
      el("p", { class: "desc", id: "detail-description" }, description),
      facts,
      el("h3", {}, t("reportPhotos")), photos.length ? thumbs(photos) : el("p", { class: "empty" }, t("none")),
      rectPhotos.length ? [el("h3", {}, t("rectPhotos")), thumbs(rectPhotos)] : null,
      actions,
      el("h3", {}, t("history")), kase ? timelineList(kase.timeline) : el("p", { class: "empty" }, t("none")),
    ].flat().filter(Boolean));
  }

  // ------------------------------------------------------------------ grid member: offline queue

  const store = {
    db: null,
    async open() {
      if (this.db) return this.db;
      this.db = await new Promise((resolve, reject) => {
        const request = indexedDB.open("hazard-app", 1);
        request.onupgradeneeded = () => request.result.createObjectStore("outbox", { keyPath: "report_id" });
        request.onsuccess = () => resolve(request.result);
        request.onerror = () => reject(request.error);
      });
      return this.db;
    },
    async run(mode, fn) {
      const db = await this.open();
      return new Promise((resolve, reject) => {
        const tx = db.transaction("outbox", mode);
        const request = fn(tx.objectStore("outbox"));
        tx.oncomplete = () => resolve(request ? request.result : undefined);
        tx.onerror = () => reject(tx.error);
        tx.onabort = () => reject(tx.error);
      });
    },
    all() { return this.run("readonly", (s) => s.getAll()); },
    put(item) { return this.run("readwrite", (s) => s.put(item)); },
    remove(id) { return this.run("readwrite", (s) => s.delete(id)); },
  };

  async function myItems() {
    const all = await store.all();
    return all.filter((i) => i.owner === state.me.principal).sort((a, b) => a.created_at.localeCompare(b.created_at));
  }

  function fillCategories() {
    const select = $("r-category");
    const groups = state.ref.groups.map((g) => el("optgroup", { label: GROUPS[state.lang][g] || g },
      state.ref.categories.filter((c) => c.group === g).map((c) => el("option", { value: c.id }, c[state.lang] || c.zh))));
    const current = select.value;
    select.replaceChildren(el("option", { value: "" }, "—"), ...groups);
    select.value = current;
  }

  async function gridEnter() {
    fillCategories();
    $("grid-name").textContent = gridName(state.me.grid_id);
    await gridTab(state.grid.tab);
    netStatus();
    await renderOutbox();
    await sync();
    await Promise.all([refreshMine(), refreshVerify()]).catch(() => {});
  }

  async function gridTick() {
    await sync();
    await Promise.all([refreshMine(), refreshVerify()]);
  }

  async function gridTab(name) {
    state.grid.tab = name;
    for (const b of document.querySelectorAll("#grid .tab")) b.classList.toggle("active", b.dataset.tab === name);
    for (const p of document.querySelectorAll("#grid .tab-panel")) p.hidden = p.dataset.panel !== name;
  }

  function netStatus() {
    setStatus($("net-status"), navigator.onLine ? "" : t("offline"), !navigator.onLine);
  }

  function readReportForm() {
    const f = {
      category: $("r-category"), address: $("r-address"), building: $("r-building"),
      description: $("r-description"), photos: $("r-photos"),
    };
    const place = document.querySelector("input[name=place]:checked").value;
    const building = f.building.value.trim();
    const checks = [
      fieldError(f.category, f.category.value ? "" : t("pickCategory")),
      checkText(f.description, { max: 2000, empty: "needDescription" }),
      fieldError(f.address, f.address.value.trim().length > 300 ? t("tooLong", { n: 300 }) : ""),
      fieldError(f.building, building && !/^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,63}$/.test(building) ? t("badBuilding") : ""),
      fieldError($("r-place"), place === "gps" && !state.grid.gps ? t("needLocation") : ""),
      checkPhotos(f.photos),
    ];
    if (!checks.every(Boolean)) return null;
    const grid = state.ref.grids.find((g) => g.id === state.me.grid_id);
    const where = place === "gps" ? state.grid.gps : grid.center;
    const body = {
      category: f.category.value, description: f.description.value.trim(),
      location: { lat: where.lat, lon: where.lon, address: f.address.value.trim() },
      grid_id: state.me.grid_id, observed_at: new Date().toISOString(), rectified_on_site: $("r-onsite").checked,
    };
    if (building) body.location.building_id = building;
    if ($("r-urgent").checked) body.urgency = "urgent";
    return { body, files: [...f.photos.files].map((file) => ({ name: file.name, type: file.type, blob: file })) };
  }

  async function submitReport(ev) {
    ev.preventDefault();
    const read = readReportForm();
    if (!read) return;
    const item = {
      report_id: uuid4(), owner: state.me.principal, created_at: new Date().toISOString(),
      body: read.body, files: read.files, uploaded: read.files.map(() => null), status: "queued", error: null, hazard_id: null,
    };
    await store.put(item);
    $("report-form").reset();
    state.grid.gps = null;
    $("r-coords").textContent = "";
    setStatus($("report-status"), t("queuedOk"));
    await renderOutbox();
    sync();
  }

  const BADGES = { queued: "statusQueued", sending: "statusSending", accepted: "statusAccepted", error: "statusError" };

  async function renderOutbox() {
    if (!state.me) return;
    const items = await myItems();
    $("outbox-count").textContent = items.filter((i) => i.status !== "accepted").length;
    $("outbox-list").replaceChildren(...(items.length ? items.map((i) => el("li", { class: "card", "data-report-id": i.report_id, "data-status": i.status, "data-hazard-id": i.hazard_id },
      el("div", { class: "row1" }, el("span", { class: "cat" }, categoryName(i.body.category)), el("span", { class: "badge " + i.status }, t(BADGES[i.status]))),
      el("p", { class: "desc" }, i.body.description),
      el("div", { class: "meta" }, [cityTime(i.created_at), i.files.length ? `${t("queuedPhotos")} ${i.files.length}` : null, i.hazard_id].filter(Boolean).join(" · ")),
      i.error ? el("p", { class: "field-error", "data-item-error": "" }, i.error.message, (i.error.details || []).map((d) => ` ${d.field || ""}: ${d.problem || ""}`).join(";")) : null,
      el("div", { class: "buttons" },
        i.status === "error" ? el("button", { type: "button", class: "small", onclick: () => editItem(i) }, t("edit")) : null,
        i.status === "error" || i.status === "accepted" ? el("button", { type: "button", class: "small ghost", onclick: async () => { await store.remove(i.report_id); await renderOutbox(); } }, i.status === "accepted" ? t("clear") : t("remove")) : null)))
      : [el("li", { class: "empty" }, t("none"))]));
    const buildings = new Set([...items.map((i) => i.body.location.building_id), ...state.grid.mine.map((c) => c.building_id)].filter(Boolean));
    $("r-buildings").replaceChildren(...[...buildings].map((b) => el("option", { value: b })));
  }

  async function editItem(item) {
    // Back into the form (its photos must be chosen again), out of the queue.
    $("r-category").value = item.body.category;
    $("r-description").value = item.body.description;
    $("r-address").value = item.body.location.address || "";
    $("r-building").value = item.body.location.building_id || "";
    $("r-onsite").checked = !!item.body.rectified_on_site;
    $("r-urgent").checked = item.body.urgency === "urgent";
    await store.remove(item.report_id);
    await renderOutbox();
    await gridTab("report");
    for (const d of (item.error && item.error.details) || []) {
      const field = String(d.field || (d.loc || []).slice(-1)[0] || "");
      const input = { category: $("r-category"), description: $("r-description"), address: $("r-address"), building_id: $("r-building"), photos: $("r-photos"), location: $("r-address") }[field];
      if (input) fieldError(input, d.problem || item.error.message);
    }
  }

  async function sync() {
    // Send every queued report of this grid member as one batch, its photos uploaded first.
    if (state.grid.syncing || !state.me || state.me.role !== "reporter") return;
    state.grid.syncing = true;
    let items = [];
    try {
      items = (await myItems()).filter((i) => i.status === "queued" || i.status === "sending");
      if (!items.length) return;
      const ready = [];
      for (const item of items) {
        item.status = "sending";
        await store.put(item);
        await renderOutbox();
        try {
          for (let k = 0; k < item.files.length; k++) {
            if (item.uploaded[k]) continue;
            const form = new FormData();
            form.append("file", item.files[k].blob, item.files[k].name || "photo.jpg");
            item.uploaded[k] = (await api("intake", "/api/v1/photos", { method: "POST", form })).url;
            await store.put(item);
          }
          ready.push(item);
        } catch (err) {
          if (err.network || err.status >= 500 || err.status === 429 || err.status === 401) throw err;
          item.status = "error";
          item.error = { message: err.message, details: [{ field: "photos", problem: err.message }] };
          await store.put(item);
        }
      }
      if (!ready.length) return;
      const answer = await api("intake", "/api/v1/hazards/batch", {
        method: "POST", json: { reports: ready.map((i) => ({ ...i.body, report_id: i.report_id, photos: i.uploaded })) },
      });
      for (const [n, result] of answer.results.entries()) {
        const item = ready[result.index !== undefined ? result.index : n];
        if (result.outcome === "rejected") {
          item.status = "error";
          item.error = result.error;
        } else {
          item.status = "accepted";
          item.hazard_id = result.hazard_id;
          item.error = null;
          item.files = [];
        }
        await store.put(item);
      }
      refreshMine().catch(() => {});
    } catch (err) {
      for (const item of items) {
        if (item.status === "sending") { item.status = "queued"; await store.put(item); }
      }
      if (err.network) netStatus();
    } finally {
      state.grid.syncing = false;
      await renderOutbox();
    }
  }

  async function refreshMine() {
    const answer = await api("tracking", "/api/v1/hazards", { params: { mine: "true", limit: 50 } });
    state.grid.mine = answer.items;
    $("mine-list").replaceChildren(...(answer.items.length ? answer.items.map((c) => el("li", { class: "card", "data-hazard-id": c.hazard_id, "data-state": c.state },
      el("div", { class: "row1" }, el("span", { class: "cat" }, categoryName(c.category)), el("span", { class: "badge" }, stateName(c.state))),
      el("div", { class: "meta" }, [cityTime(c.reported_at), c.department_id ? departmentName(c.department_id) : null, c.rectified_on_site ? t("onSiteShort") : null].filter(Boolean).join(" · "))))
      : [el("li", { class: "empty" }, t("none"))]));
  }

  async function refreshVerify() {
    const answer = await api("tracking", "/api/v1/hazards", { params: { state: "rectified", limit: 100 } });
    state.grid.verify = answer.items;
    $("verify-count").textContent = answer.items.length;
    $("verify-list").replaceChildren(...(answer.items.length ? answer.items.map((c) => el("li", {
      class: "card", "data-hazard-id": c.hazard_id, onclick: () => openVerification(c.hazard_id),
    }, el("div", { class: "row1" }, el("span", { class: "cat" }, categoryName(c.category)), el("span", { class: "badge" }, stateName(c.state))),
    el("div", { class: "meta" }, [departmentName(c.department_id), cityTime(c.reported_at)].join(" · "))))
      : [el("li", { class: "empty" }, t("none"))]));
    const open = $("verify-detail").dataset.hazardId;
    if (open && !answer.items.some((c) => c.hazard_id === open)) $("verify-detail").replaceChildren();
  }

  async function openVerification(hazardId) {
    const box = $("verify-detail");
    box.dataset.hazardId = hazardId;
    let kase;
    try { kase = await api("tracking", `/api/v1/hazards/${hazardId}`); }
    catch (err) { box.replaceChildren(el("p", { class: "status error" }, err.status === 404 ? t("notFound") : t("failed") + err.message)); return; }
    const reported = (kase.timeline.find((e) => e.event_type === "hazard.reported") || {}).details || {};
    const rectified = kase.timeline.filter((e) => e.event_type === "hazard.rectified").pop();
    const done = async () => { box.replaceChildren(el("p", { class: "status" }, t("verified"))); delete box.dataset.hazardId; await refreshVerify(); await refreshMine(); };
    box.replaceChildren(
      el("h3", { "data-hazard-id": hazardId }, categoryName(kase.category)),
      el("p", { class: "desc" }, reported.description || ""),
      thumbs(reported.photos || []),
      el("h3", {}, t("rectPhotos")),
      el("p", { class: "desc" }, rectified ? rectified.details.note : ""),
      thumbs(rectified ? rectified.details.photos : []),
      el("div", { class: "buttons" }, el("button", { type: "button", id: "verify-pass", onclick: async (ev) => {
        ev.target.disabled = true;
        try { await api("tracking", `/api/v1/hazards/${hazardId}/verification`, { method: "POST", json: { passed: true } }); await done(); }
        catch (err) { ev.target.disabled = false; if (err.status !== 401) setStatus($("verify-pass-status"), t("failed") + err.message, true); }
      } }, t("verifyPass"))),
      el("p", { class: "status", id: "verify-pass-status", role: "status" }),
      actionForm("verify-fail-form", t("verifyFail"), [
        { name: "note", label: t("failNote"), type: "textarea" },
        { name: "photos", label: t("failPhoto"), type: "file", accept: PHOTO_TYPES.join(","), multiple: true, capture: "environment" },
      ], t("verifyButton"), async (form) => {
        const ok = [checkText(form.elements.note, { max: 2000 }), checkPhotos(form.elements.photos, { required: true })].every(Boolean);
        if (!ok) return false;
        let urls;
        try { urls = await uploadPhotos([...form.elements.photos.files], hazardId); }
        catch (err) { if (err.status !== 401) fieldError(form.elements.photos, err.message); return false; }
        await api("tracking", `/api/v1/hazards/${hazardId}/verification`, { method: "POST", json: { passed: false, note: form.elements.note.value.trim(), photos: urls } });
        await done();
      }));
  }

  // ------------------------------------------------------------------ operator's queue

  function departmentOptions() {
    return state.ref.departments.map((d) => ({ id: d.id, label: d[state.lang] || d.zh }));
  }

  function moveForm(id, title, button, send) {
    return actionForm(id, title, [
      { name: "department_id", label: t("department"), type: "select", options: departmentOptions() },
      { name: "reason", label: t("reason"), type: "textarea" },
    ], button, async (form) => {
      const ok = [fieldError(form.elements.department_id, form.elements.department_id.value ? "" : t("pickDepartment")),
        checkText(form.elements.reason, { min: 3, max: 1000, empty: "needReason" })].every(Boolean);
      if (!ok) return false;
      await send({ department_id: form.elements.department_id.value, reason: form.elements.reason.value.trim() });
      await queueRefresh();
    });
  }

  function decisionForm(id, onDecide) {
    // Approve or refuse an extension, with an optional note (the same note field for both).
    const form = el("form", { id, novalidate: true, class: "decision" },
      el("label", { for: id + "-note" }, t("decisionNote")),
      el("textarea", { id: id + "-note", name: "note", rows: 2 }),
      el("p", { class: "field-error", id: id + "-note-error", role: "alert" }),
      el("div", { class: "buttons" },
        el("button", { type: "submit", name: "decision", value: "approve", class: "small" }, t("approveExt")),
        el("button", { type: "submit", name: "decision", value: "refuse", class: "small danger" }, t("refuseExt"))),
      el("p", { class: "status", role: "status" }));
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const decision = ev.submitter && ev.submitter.value === "refuse" ? "refuse" : "approve";
      const note = form.elements.note;
      if (note.value.trim().length > 1000) { fieldError(note, t("tooLong", { n: 1000 })); return; }
      const buttons = [...form.querySelectorAll("button")];
      buttons.forEach((b) => { b.disabled = true; });
      try {
        await onDecide(decision, note.value.trim() ? { note: note.value.trim() } : {});
        setStatus(form.querySelector(".status"), t("saved"));
        if (document.activeElement && form.contains(document.activeElement)) document.activeElement.blur();
        await queueRefresh();
      } catch (err) {
        if (err.status !== 401) serverErrorTo(form, err);
      } finally {
        buttons.forEach((b) => { b.disabled = false; });
      }
    });
    return form;
  }

  function extensionCard(item) {
    // A receipt extension (a dispatch) or a rectification one (a case): what was asked, by whom, why.
    const r = item.request;
    return el("li", { class: "card", "data-stage": item.stage, "data-hazard-id": item.hazard_id, "data-dispatch-id": item.dispatch_id },
      el("div", { class: "row1" }, el("span", { class: "cat" }, `${categoryName(item.category)} · ${t("stage_" + item.stage)}`),
        el("span", { class: "badge" }, departmentName(item.department_id))),
      el("p", { class: "desc" }, r.reason),
      el("div", { class: "meta" }, `${t("originalDeadline")} ${cityTime(r.previous_deadline)} → ${t("requestedDeadline")} ${cityTime(r.requested_deadline)}`),
      el("div", { class: "meta" }, `${t("requestedBy")} ${r.requested_by} · ${cityTime(r.requested_at)}`),
      decisionForm(`ext-${item.stage}-${item.hazard_id}`, (decision, body) => item.stage === "receipt"
        ? api("dispatch", `/api/v1/dispatches/${item.dispatch_id}/extension/${decision}`, { method: "POST", json: body })
        : api("tracking", `/api/v1/hazards/${item.hazard_id}/rectification/extension/${decision}`, { method: "POST", json: body })));
  }

  function urgeCard(item) {
    return el("li", { class: "card", "data-stage": item.stage, "data-hazard-id": item.hazard_id },
      el("div", { class: "row1" }, el("span", { class: "cat" }, `${categoryName(item.category)} · ${t("stage_" + item.stage)}`), timeLeft(item.deadline, item.overdue)),
      el("div", { class: "meta" }, [departmentName(item.department_id), gridName(item.grid_id),
        state.queue.urged.has(item.hazard_id) ? t("urged") : null].filter(Boolean).join(" · ")),
      actionForm("urge-" + item.hazard_id, t("urgeTitle"), [{ name: "note", label: t("urgeNote"), type: "text" }], t("urgeButton"), async (form) => {
        if (!checkText(form.elements.note, { max: 2000 })) return false;
        await api("tracking", `/api/v1/hazards/${item.hazard_id}/urgings`, { method: "POST", json: { note: form.elements.note.value.trim() } });
        state.queue.urged.add(item.hazard_id);
        form.elements.note.value = "";
        if (document.activeElement && form.contains(document.activeElement)) document.activeElement.blur();
        await queueRefresh();
      }));
  }

  async function rectExtensions() {
    // Cases whose rectification extension awaits a decision; each case says what was asked.
    const list = await api("tracking", "/api/v1/hazards", { params: { extension_request: "awaiting_approval", limit: 50 } });
    const cases = await Promise.all(list.items.map((c) => api("tracking", `/api/v1/hazards/${c.hazard_id}`).catch(() => null)));
    return cases.filter((k) => k && k.extension_requests.rectification && k.extension_requests.rectification.status === "awaiting_approval")
      .map((k) => ({ stage: "rectification", hazard_id: k.hazard_id, dispatch_id: k.dispatch_id, category: k.category,
        department_id: k.department_id, request: k.extension_requests.rectification }));
  }

  async function queueRefresh() {
    const operator = state.me.role === "operator";
    const [queue, pending, approvals, receiptExt, rectExt, ordered] = await Promise.all([
      api("dispatch", "/api/v1/operator-queue", { params: { limit: 200 } }),
      api("dispatch", "/api/v1/dispatches", { params: { status: "pending", limit: 500 } }),
      api("dispatch", "/api/v1/dispatches", { params: { return_request: "awaiting_approval", limit: 100 } }),
      api("dispatch", "/api/v1/dispatches", { params: { extension_request: "awaiting_approval", limit: 100 } }),
      rectExtensions(),
      api("tracking", "/api/v1/hazards", { params: { state: "rectification_ordered", limit: 100 } }),
    ]);
    const extensions = [...receiptExt.items.filter((d) => d.extension_request).map((d) => ({ stage: "receipt", hazard_id: d.hazard_id,
      dispatch_id: d.dispatch_id, category: d.category, department_id: d.department_id, request: d.extension_request })), ...rectExt];
    $("extension-count").textContent = extensions.length;
    if (!keep($("extension-list"))) {
      $("extension-list").replaceChildren(...(extensions.length ? extensions.map(extensionCard) : [el("li", { class: "empty" }, t("none"))]));
    }
    const open = [...pending.items.map((d) => ({ stage: "receipt", hazard_id: d.hazard_id, category: d.category, department_id: d.department_id,
      grid_id: d.grid_id, deadline: d.receipt_deadline, overdue: d.overdue })),
    ...ordered.items.map((c) => ({ stage: "rectification", hazard_id: c.hazard_id, category: c.category, department_id: c.department_id,
      grid_id: c.grid_id, deadline: c.rectification_deadline, overdue: c.rectification_overdue }))].slice(0, 100);
    if (!keep($("urge-list"))) {
      $("urge-list").replaceChildren(...(open.length ? open.map(urgeCard) : [el("li", { class: "empty" }, t("none"))]));
    }
    if (!state.queue.rules) state.queue.rules = await api("dispatch", "/api/v1/routing-rules");
    $("queue-count").textContent = queue.items.length;
    setStatus($("queue-status"), `${t("updated")} ${cityTime(new Date())}`);
    if (!keep($("queue-list"))) {
      $("queue-list").replaceChildren(...(queue.items.length ? queue.items.map((h) => el("li", { class: "card", "data-hazard-id": h.hazard_id },
        el("div", { class: "row1" }, el("span", { class: "cat" }, categoryName(h.category)), el("span", { class: "badge" }, t("referral" + h.reason.charAt(0).toUpperCase() + h.reason.slice(1)))),
        el("div", { class: "meta" }, [gridName(h.grid_id), cityTime(h.reported_at), h.urgency].filter(Boolean).join(" · ")),
        operator ? moveForm("assign-" + h.hazard_id, t("assignTitle"), t("assign"), (body) => api("dispatch", `/api/v1/hazards/${h.hazard_id}/assign`, { method: "POST", json: body })) : null))
        : [el("li", { class: "empty" }, t("none"))]));
    }
    const rerouted = pending.items.filter((d) => d.reason === "rerouted" || d.reason === "reassigned");
    if (!keep($("rerouted-list"))) {
      $("rerouted-list").replaceChildren(...(rerouted.length ? rerouted.map((d) => el("li", { class: "card", "data-hazard-id": d.hazard_id, "data-dispatch-id": d.dispatch_id },
        el("div", { class: "row1" }, el("span", { class: "cat" }, categoryName(d.category)), timeLeft(d.receipt_deadline, d.overdue)),
        el("p", { class: "desc" }, (d.report && d.report.description) || ""),
        el("div", { class: "meta" }, [departmentName(d.department_id), gridName(d.grid_id), d.reason].join(" · ")),
        operator ? moveForm("reassign-" + d.dispatch_id, t("reassign"), t("reassign"), (body) => api("dispatch", `/api/v1/dispatches/${d.dispatch_id}/reassign`, { method: "POST", json: body })) : null))
        : [el("li", { class: "empty" }, t("none"))]));
    }
    if (!keep($("approval-list"))) {
      $("approval-list").replaceChildren(...(approvals.items.length ? approvals.items.map((d) => el("li", { class: "card", "data-dispatch-id": d.dispatch_id },
        el("div", { class: "row1" }, el("span", { class: "cat" }, categoryName(d.category)), el("span", { class: "badge" }, departmentName(d.department_id))),
        el("p", { class: "desc" }, d.return_request ? d.return_request.reason : ""),
        el("div", { class: "meta" }, d.return_request ? `${t("requestedBy")} ${d.return_request.requested_by} · ${cityTime(d.return_request.requested_at)}` : ""),
        operator ? el("div", { class: "buttons" }, el("button", { type: "button", class: "small", onclick: async () => {
          await api("dispatch", `/api/v1/dispatches/${d.dispatch_id}/return/approve`, { method: "POST" }); await queueRefresh();
        } }, t("approve"))) : null,
        operator ? actionForm("refuse-" + d.dispatch_id, t("refuse"), [{ name: "reason", label: t("refuseReason"), type: "textarea" }], t("refuse"), async (form) => {
          if (!checkText(form.elements.reason, { min: 3, max: 1000, empty: "needReason" })) return false;
          await api("dispatch", `/api/v1/dispatches/${d.dispatch_id}/return/refuse`, { method: "POST", json: { reason: form.elements.reason.value.trim() } });
          await queueRefresh();
        }) : null))
        : [el("li", { class: "empty" }, t("none"))]));
    }
    const rules = state.queue.rules.rules;
    $("rules-table").replaceChildren(
      el("thead", {}, el("tr", {}, ["#", t("rule"), t("category"), t("community"), t("grid"), t("department")].map((h) => el("th", {}, h)))),
      el("tbody", {}, rules.map((r) => el("tr", { "data-rule": r.id }, el("td", {}, r.position), el("td", {}, r.id), el("td", {}, categoryName(r.category)),
        el("td", {}, r.community_id ? named(state.ref.communities, r.community_id) : t("any")),
        el("td", {}, r.grid_id ? gridName(r.grid_id) : t("any")), el("td", {}, departmentName(r.department_id))))));
  }

  function keep(list) {
    // A list the user is typing in is not redrawn under their fingers.
    return document.activeElement && list.contains(document.activeElement);
  }

  // ------------------------------------------------------------------ start

  async function start() {
    applyText();
    $("lang-toggle").addEventListener("click", async () => {
      state.lang = state.lang === "zh" ? "en" : "zh";
      localStorage.setItem(LANG_KEY, state.lang);
      applyText();
      if (state.me) await enter();
    });
    $("sign-out").addEventListener("click", () => signOut(""));
    // A field's message goes away as soon as the user changes it.
    for (const kind of ["input", "change"]) {
      document.addEventListener(kind, (ev) => {
        if (ev.target instanceof Element && ev.target.getAttribute("aria-invalid") === "true") fieldError(ev.target, "");
      });
    }
    $("signin-form").addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const input = $("token-input");
      const token = input.value.trim();
      if (!fieldError(input, token ? "" : t("needToken"))) return;
      try {
        await signIn(token);
        input.value = "";
        fieldError(input, "");
      } catch (err) {
        fieldError(input, err.status === 401 ? t("badToken") : t("failed") + err.message);
      }
    });
    $("report-form").addEventListener("submit", (ev) => submitReport(ev).catch((err) => setStatus($("report-status"), t("failed") + err.message, true)));
    for (const b of document.querySelectorAll("#grid .tab")) b.addEventListener("click", () => gridTab(b.dataset.tab));
    $("sync-now").addEventListener("click", () => sync());
    $("r-locate").addEventListener("click", () => {
      if (!navigator.geolocation) { setStatus($("r-coords"), t("locateFailed")); return; }
      $("r-coords").textContent = t("locating");
      navigator.geolocation.getCurrentPosition((pos) => {
        state.grid.gps = { lat: pos.coords.latitude, lon: pos.coords.longitude };
        document.querySelector("input[name=place][value=gps]").checked = true;
        $("r-coords").textContent = `${t("located")} ${pos.coords.latitude.toFixed(5)}, ${pos.coords.longitude.toFixed(5)}`;
        fieldError($("r-place"), "");
      }, (err) => { $("r-coords").textContent = t("locateFailed") + err.message; }, { enableHighAccuracy: true, timeout: 15000 });
    });
    window.addEventListener("online", () => { netStatus(); sync(); });
    window.addEventListener("offline", netStatus);
    window.addEventListener("hashchange", () => { if (state.me && state.me.role === "department") deskRoute(); });
    [state.cfg, state.ref] = await Promise.all([
      fetch("/app/config.json").then((r) => r.json()),
      fetch("/app/reference.json").then((r) => r.json()),
    ]);
    if (!state.token) { signOut(""); return; }
    try {
      state.me = await api("reporting", "/api/v1/whoami", { signingIn: true });
    } catch (err) {
      // Offline: the grid member keeps working from what this browser knows.
      const cached = err.network ? JSON.parse(localStorage.getItem(ME_KEY) || "null") : null;
      if (!cached) { signOut(err.status === 401 ? t("expired") : t("failed") + err.message); return; }
      state.me = cached;
    }
    localStorage.setItem(ME_KEY, JSON.stringify(state.me));
    await enter();
  }

  start();
})();
