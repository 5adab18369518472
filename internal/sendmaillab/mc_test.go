package sendmaillab

import (
	"strings"
	"testing"
	"time"
)

func TestRenderMC(t *testing.T) {
	c := layout{dir: "/lab", root: "/sm", smtpPort: 2525, relayPort: 2626, milters: []string{"local:/lab/m.sock", "inet:9999@127.0.0.1"},
		queueWarn: 90 * time.Second, queueReturn: 3 * time.Minute, logLevel: "14"}
	mc := renderMC(c)
	for _, want := range []string{
		"DAEMON_OPTIONS(`Family=inet, Name=MTA, Addr=127.0.0.1, Port=2525')dnl\n",
		"define(`RELAY_MAILER_ARGS', `TCP $h 2626')dnl\n",
		"INPUT_MAIL_FILTER(`lab0', `S=local:/lab/m.sock, F=T, T=C:30s;S:5m;R:5m;E:5m')dnl\n",
		"INPUT_MAIL_FILTER(`lab1', `S=inet:9999@127.0.0.1, F=T, T=C:30s;S:5m;R:5m;E:5m')dnl\n",
		"define(`confTO_QUEUEWARN', `90s')dnl\n",
		"define(`confTO_QUEUERETURN', `3m')dnl\n",
		"MAILER(`smtp')dnl\n",
	} {
		if !strings.Contains(mc, want) {
			t.Errorf(".mc lacks %q:\n%s", want, mc)
		}
	}
	for _, absent := range []string{"Name=MSA", "confMILTER_MACROS_EOM", "confAUTH_MECHANISMS", "Options.ExtraMC"} {
		if strings.Contains(mc, absent) {
			t.Errorf(".mc has %q without asking:\n%s", absent, mc)
		}
	}
	c.submitPort, c.submission, c.milterMacrosEOM, c.extraMC = 2587, true, "{msg_id}, i", "FEATURE(`mailertable')dnl"
	mc = renderMC(c)
	for _, want := range []string{
		"DAEMON_OPTIONS(`Family=inet, Name=MSA, Addr=127.0.0.1, Port=2587, M=Ea')dnl\n",
		"define(`confMILTER_MACROS_EOM', `{msg_id}, i')dnl\n",
		"define(`confAUTH_OPTIONS', `A,p')dnl\n",
		"FEATURE(`mailertable')dnl\nMAILER(`local')dnl\n",
	} {
		if !strings.Contains(mc, want) {
			t.Errorf(".mc lacks %q:\n%s", want, mc)
		}
	}
}

func TestSyslogLine(t *testing.T) {
	for in, want := range map[string]string{
		"<22>Dec  2 04:20:21 sm-mta[31832]: 6B24KLRD031832: done\x00": "Dec  2 04:20:21 sm-lab sm-mta[31832]: 6B24KLRD031832: done\n",
		"<22>Dec  2 04:20:21 sm-mta[1]: a\nDec  2 04:20:22 forged":    "Dec  2 04:20:21 sm-lab sm-mta[1]: a Dec  2 04:20:22 forged\n",
		"no header": "no header\n",
		"<22>":      "",
	} {
		if got := string(syslogLine([]byte(in), "sm-lab")); got != want {
			t.Errorf("syslogLine(%q) = %q, want %q", in, got, want)
		}
	}
}
