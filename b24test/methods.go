package b24test

import (
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"
)

// callCtx is what a built-in method gets; it runs with the server lock held.
type callCtx struct {
	p     *Portal
	user  int
	now   time.Time
	next  *int
	total *int
	fired []firedEvent // events the call caused, sent when it succeeded
}

type builtin struct {
	scope string // required app scope ("" = basic)
	fn    func(c *callCtx, params *phpArray) (any, *Error)
}

var builtins map[string]builtin

func init() {
	builtins = map[string]builtin{
		"profile":         {"", mProfile},
		"app.info":        {"", mAppInfo},
		"user.admin":      {"", func(c *callCtx, _ *phpArray) (any, *Error) { return c.p.users[c.user], nil }},
		"server.time":     {"", func(c *callCtx, _ *phpArray) (any, *Error) { return phpDate(c.now), nil }},
		"scope":           {"", mScope},
		"crm.deal.list":   {"crm", mDealList},
		"crm.deal.get":    {"crm", mDealGet},
		"crm.deal.add":    {"crm", mDealAdd},
		"crm.deal.update": {"crm", mDealUpdate},
		"crm.deal.delete": {"crm", mDealDelete},
		"tasks.task.list": {"task", mTaskList},
		"tasks.task.get":  {"task", mTaskGet},
		"tasks.task.add":  {"task", mTaskAdd},
	}
	registerEventMethods()
}

const pageSize = 50

// record is one stored entity: upper-case field names to string values.
type record map[string]string

type deal = record
type task = record

func mProfile(c *callCtx, _ *phpArray) (any, *Error) {
	return map[string]any{
		"ID":               strconv.Itoa(c.user),
		"ADMIN":            c.p.users[c.user],
		"NAME":             "Test",
		"LAST_NAME":        "Admin",
		"PERSONAL_GENDER":  "",
		"TIME_ZONE":        "",
		"TIME_ZONE_OFFSET": 0,
	}, nil
}

func mAppInfo(c *callCtx, _ *phpArray) (any, *Error) {
	return map[string]any{
		"ID":              1,
		"CODE":            c.p.s.cfg.clientID,
		"VERSION":         c.p.appVersionInt(),
		"STATUS":          c.p.status,
		"INSTALLED":       c.p.installed,
		"PAYMENT_EXPIRED": "N",
		"DAYS":            nil,
		"LANGUAGE_ID":     c.p.language,
		"LICENSE":         c.p.language + "_pro100",
		"LICENSE_TYPE":    "pro100",
		"LICENSE_FAMILY":  "pro",
	}, nil
}

func mScope(c *callCtx, _ *phpArray) (any, *Error) {
	out := []string{}
	for _, sc := range strings.Split(c.p.scope, ",") {
		if sc = strings.TrimSpace(sc); sc != "" {
			out = append(out, sc)
		}
	}
	return out, nil
}

// ---- parameter helpers ----

func pString(params *phpArray, key string) (string, bool) {
	v, ok := params.get(key)
	if !ok {
		return "", false
	}
	switch t := v.(type) {
	case string:
		return t, true
	case float64:
		return strconv.FormatFloat(t, 'f', -1, 64), true
	case bool:
		if t {
			return "1", true
		}
		return "", true
	}
	return "", false
}

func pArray(params *phpArray, key string) *phpArray {
	if v, ok := params.get(key); ok {
		if a, ok := v.(*phpArray); ok {
			return a
		}
	}
	return nil
}

// pID reads a positive integer parameter (case-insensitive key).
func pID(params *phpArray, keys ...string) (int, bool) {
	for _, k := range keys {
		for _, cand := range []string{k, strings.ToLower(k), strings.ToUpper(k)} {
			if s, ok := pString(params, cand); ok {
				n, err := strconv.Atoi(strings.TrimSpace(s))
				if err != nil || n <= 0 {
					return 0, false
				}
				return n, true
			}
		}
	}
	return 0, false
}

func scalarString(v any) (string, bool) {
	switch t := v.(type) {
	case string:
		return t, true
	case float64:
		return strconv.FormatFloat(t, 'f', -1, 64), true
	case bool:
		if t {
			return "1", true
		}
		return "", true
	case nil:
		return "", true
	}
	return "", false
}

// ---- generic list engine ----

type cond struct {
	field string // upper-case
	op    string // = ! > >= < <= % @
	vals  []string
}

// parseV2Filter turns filter[>=ID]=5 style keys into conditions.
func parseV2Filter(f *phpArray) []cond {
	if f == nil {
		return nil
	}
	var out []cond
	for _, k := range f.keys {
		op, field := splitOp(k)
		c := cond{field: strings.ToUpper(field), op: op}
		switch v := f.m[k].(type) {
		case *phpArray:
			for _, kk := range v.keys {
				if s, ok := scalarString(v.m[kk]); ok {
					c.vals = append(c.vals, s)
				}
			}
			if c.op == "=" {
				c.op = "@"
			} else if c.op == "!" {
				c.op = "!@"
			}
		default:
			s, _ := scalarString(v)
			c.vals = []string{s}
		}
		out = append(out, c)
	}
	return out
}

func splitOp(k string) (op, field string) {
	for _, o := range []string{">=", "<=", "!=", "!@", "=%", "%", ">", "<", "=", "!", "@"} {
		if strings.HasPrefix(k, o) {
			switch o {
			case "!=":
				o = "!"
			case "=%":
				o = "%"
			}
			return o, k[len(o):]
		}
	}
	return "=", k
}

func compare(a, b string) int {
	fa, ea := strconv.ParseFloat(a, 64)
	fb, eb := strconv.ParseFloat(b, 64)
	if ea == nil && eb == nil {
		switch {
		case fa < fb:
			return -1
		case fa > fb:
			return 1
		}
		return 0
	}
	return strings.Compare(a, b)
}

func (c cond) match(r record) bool {
	v := r[c.field]
	first := ""
	if len(c.vals) > 0 {
		first = c.vals[0]
	}
	switch c.op {
	case "=":
		return compare(v, first) == 0
	case "!":
		return compare(v, first) != 0
	case ">":
		return compare(v, first) > 0
	case ">=":
		return compare(v, first) >= 0
	case "<":
		return compare(v, first) < 0
	case "<=":
		return compare(v, first) <= 0
	case "%":
		return strings.Contains(strings.ToLower(v), strings.ToLower(first))
	case "@", "!@":
		in := false
		for _, x := range c.vals {
			if compare(v, x) == 0 {
				in = true
				break
			}
		}
		return in == (c.op == "@")
	}
	return true
}

type orderBy struct {
	field string
	desc  bool
}

func parseV2Order(o *phpArray) []orderBy {
	var out []orderBy
	if o != nil {
		for _, k := range o.keys {
			dir, _ := scalarString(o.m[k])
			out = append(out, orderBy{field: strings.ToUpper(k), desc: strings.EqualFold(dir, "DESC")})
		}
	}
	return out
}

// query filters, sorts and pages rows. start < 0 means "no count" mode.
func query(rows []record, conds []cond, order []orderBy, start, limit int) (page []record, next, total *int) {
	var matched []record
	for _, r := range rows {
		ok := true
		for _, c := range conds {
			if !c.match(r) {
				ok = false
				break
			}
		}
		if ok {
			matched = append(matched, r)
		}
	}
	order = append(order, orderBy{field: "ID"})
	sort.SliceStable(matched, func(i, j int) bool {
		for _, o := range order {
			c := compare(matched[i][o.field], matched[j][o.field])
			if c != 0 {
				return (c < 0) != o.desc
			}
		}
		return false
	})
	if start < 0 {
		zero := 0
		if len(matched) > limit {
			matched = matched[:limit]
		}
		return matched, nil, &zero
	}
	n := len(matched)
	if start > n {
		start = n
	}
	end := start + limit
	if end > n {
		end = n
	}
	if end < n {
		nx := end
		next = &nx
	}
	return matched[start:end], next, &n
}

func startParam(params *phpArray) int {
	s, ok := pString(params, "start")
	if !ok {
		return 0
	}
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil {
		return 0
	}
	if n < 0 {
		return -1
	}
	return n
}

func selectFields(params *phpArray) []string {
	sel := pArray(params, "select")
	if sel == nil {
		return nil
	}
	var out []string
	for _, k := range sel.keys {
		if s, ok := scalarString(sel.m[k]); ok && s != "" {
			out = append(out, strings.ToUpper(s))
		}
	}
	return out
}

// ---- deals ----

var dealFields = []string{"ID", "TITLE", "TYPE_ID", "STAGE_ID", "OPPORTUNITY", "CURRENCY_ID", "ASSIGNED_BY_ID", "CREATED_BY_ID", "DATE_CREATE", "DATE_MODIFY", "CLOSED"}

func newDeal(id int, now time.Time) deal {
	ts := phpDate(now)
	return deal{
		"ID": strconv.Itoa(id), "TITLE": "Deal " + strconv.Itoa(id), "TYPE_ID": "SALE", "STAGE_ID": "NEW",
		"OPPORTUNITY": strconv.Itoa(id*100) + ".00", "CURRENCY_ID": "USD", "ASSIGNED_BY_ID": "1",
		"CREATED_BY_ID": "1", "DATE_CREATE": ts, "DATE_MODIFY": ts, "CLOSED": "N",
	}
}

func dealRow(d deal, sel []string) map[string]any {
	out := map[string]any{}
	if len(sel) == 0 || contains(sel, "*") {
		for k, v := range d {
			out[k] = v
		}
		return out
	}
	for _, f := range sel {
		if v, ok := d[f]; ok {
			out[f] = v
		} else if f == "ID" || inList(dealFields, f) {
			out[f] = nil
		}
	}
	return out
}

func contains(list []string, s string) bool { return inList(list, s) }

func inList(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func mDealList(c *callCtx, params *phpArray) (any, *Error) {
	return listPage(c, params, c.p.deals, dealRow), nil
}

// listPage answers a v2 list method over all: filter, order, start and select as the
// portal reads them, next and total in the envelope, each row shaped by row.
func listPage(c *callCtx, params *phpArray, all []record, row func(record, []string) map[string]any) []any {
	page, next, total := query(all, parseV2Filter(pArray(params, "filter")), parseV2Order(pArray(params, "order")), startParam(params), pageSize)
	sel := selectFields(params)
	rows := make([]any, 0, len(page))
	for _, r := range page {
		rows = append(rows, row(r, sel))
	}
	c.next, c.total = next, total
	return rows
}

func (p *Portal) findDeal(id int) (int, deal) {
	key := strconv.Itoa(id)
	for i, d := range p.deals {
		if d["ID"] == key {
			return i, d
		}
	}
	return -1, nil
}

func crmError(desc string) *Error {
	// Classic CRM methods report errors with an empty code.
	return &Error{Code: "", Description: desc, Status: http.StatusBadRequest}
}

func mDealGet(c *callCtx, params *phpArray) (any, *Error) {
	id, ok := pID(params, "id")
	if !ok {
		return nil, crmError("ID is not defined or invalid.")
	}
	_, d := c.p.findDeal(id)
	if d == nil {
		return nil, crmError("Not found")
	}
	return dealRow(d, nil), nil
}

func applyFields(d record, fields *phpArray) {
	if fields == nil {
		return
	}
	for _, k := range fields.keys {
		if s, ok := scalarString(fields.m[k]); ok && strings.ToUpper(k) != "ID" {
			d[strings.ToUpper(k)] = s
		}
	}
}

func mDealAdd(c *callCtx, params *phpArray) (any, *Error) {
	id := c.p.addDealLocked(c.now)
	_, d := c.p.findDeal(id)
	d["TITLE"] = ""
	applyFields(d, pArray(params, "fields"))
	c.fire("ONCRMDEALADD", id)
	return id, nil
}

func mDealUpdate(c *callCtx, params *phpArray) (any, *Error) {
	id, ok := pID(params, "id")
	if !ok {
		return nil, crmError("ID is not defined or invalid.")
	}
	_, d := c.p.findDeal(id)
	if d == nil {
		return nil, crmError("Not found")
	}
	applyFields(d, pArray(params, "fields"))
	d["DATE_MODIFY"] = phpDate(c.now)
	c.fire("ONCRMDEALUPDATE", id)
	return true, nil
}

func mDealDelete(c *callCtx, params *phpArray) (any, *Error) {
	id, ok := pID(params, "id")
	if !ok {
		return nil, crmError("ID is not defined or invalid.")
	}
	i, d := c.p.findDeal(id)
	if d == nil {
		return nil, crmError("Not found")
	}
	c.p.deals = append(c.p.deals[:i:i], c.p.deals[i+1:]...)
	c.fire("ONCRMDEALDELETE", id)
	return true, nil
}

func (p *Portal) addDealLocked(now time.Time) int {
	p.nextDealID++
	p.deals = append(p.deals, newDeal(p.nextDealID, now))
	return p.nextDealID
}

// SeedDeals adds n deals with the next IDs (1..n on a new portal): TITLE
// "Deal <id>", STAGE_ID "NEW", OPPORTUNITY "<id*100>.00", CURRENCY_ID "USD",
// ASSIGNED_BY_ID "1".
func (p *Portal) SeedDeals(n int) {
	p.s.mu.Lock()
	defer p.s.mu.Unlock()
	now := p.s.now()
	for i := 0; i < n; i++ {
		p.addDealLocked(now)
	}
}

// Deals returns the number of deals on the portal.
func (p *Portal) Deals() int {
	p.s.mu.Lock()
	defer p.s.mu.Unlock()
	return len(p.deals)
}

// Deal returns a copy of a deal's fields (upper-case names, string values).
func (p *Portal) Deal(id int) (map[string]string, bool) {
	p.s.mu.Lock()
	defer p.s.mu.Unlock()
	_, d := p.findDeal(id)
	if d == nil {
		return nil, false
	}
	out := make(map[string]string, len(d))
	for k, v := range d {
		out[k] = v
	}
	return out, true
}

// ---- tasks ----

// taskKeys maps the upper-case field names used in filter/order/select to the
// camelCase keys of task rows.
var taskKeys = map[string]string{
	"ID": "id", "TITLE": "title", "DESCRIPTION": "description", "STATUS": "status",
	"RESPONSIBLE_ID": "responsibleId", "CREATED_BY": "createdBy", "CREATED_DATE": "createdDate",
	"GROUP_ID": "groupId", "PRIORITY": "priority",
}

func newTask(id int, now time.Time) task {
	return task{
		"ID": strconv.Itoa(id), "TITLE": "Task " + strconv.Itoa(id), "DESCRIPTION": "", "STATUS": "2",
		"RESPONSIBLE_ID": "1", "CREATED_BY": "1", "CREATED_DATE": phpDate(now), "GROUP_ID": "0", "PRIORITY": "1",
	}
}

func taskRow(t task, sel []string) map[string]any {
	out := map[string]any{}
	all := len(sel) == 0 || contains(sel, "*")
	for up, camel := range taskKeys {
		if all || up == "ID" || contains(sel, up) {
			out[camel] = t[up]
		}
	}
	return out
}

func mTaskList(c *callCtx, params *phpArray) (any, *Error) {
	return map[string]any{"tasks": listPage(c, params, c.p.tasks, taskRow)}, nil
}

func mTaskGet(c *callCtx, params *phpArray) (any, *Error) {
	id, ok := pID(params, "taskId", "id")
	if !ok {
		return nil, &Error{Code: "ERROR_CORE", Description: "Wrong task ID", Status: http.StatusBadRequest}
	}
	key := strconv.Itoa(id)
	for _, t := range c.p.tasks {
		if t["ID"] == key {
			return map[string]any{"task": taskRow(t, selectFields(params))}, nil
		}
	}
	return nil, &Error{Code: "ERROR_CORE", Description: "Task not found or not accessible", Status: http.StatusBadRequest}
}

func mTaskAdd(c *callCtx, params *phpArray) (any, *Error) {
	c.p.nextTaskID++
	t := newTask(c.p.nextTaskID, c.now)
	t["TITLE"] = ""
	applyFields(t, pArray(params, "fields"))
	c.p.tasks = append(c.p.tasks, t)
	return map[string]any{"task": taskRow(t, nil)}, nil
}

// SeedTasks adds n tasks with the next IDs: title "Task <id>", status "2".
func (p *Portal) SeedTasks(n int) {
	p.s.mu.Lock()
	defer p.s.mu.Unlock()
	now := p.s.now()
	for i := 0; i < n; i++ {
		p.nextTaskID++
		p.tasks = append(p.tasks, newTask(p.nextTaskID, now))
	}
}

// Tasks returns the number of tasks on the portal.
func (p *Portal) Tasks() int {
	p.s.mu.Lock()
	defer p.s.mu.Unlock()
	return len(p.tasks)
}
