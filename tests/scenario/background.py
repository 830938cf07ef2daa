"""Background traffic of the scripted day: what a healthy fleet logs, which triggers no rule."""

from __future__ import annotations

import random

from tests.scenario.fleet import (
    AUTHPRIV,
    CLIENT_NAMES,
    CRON,
    DAEMON,
    DAY_S,
    FLEET,
    INFO,
    KERN,
    NOTICE,
    NTP_SERVERS,
    SCANNER_PORTS,
    SITES,
    WAN,
    WARNING,
    Client,
    Injection,
    Record,
    Router,
    router_named,
)


class Background:
    """Records of a healthy day; `background()` writes them, seeded."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)  # noqa: S311  # a repeatable day, not secrets
        self.records: list[Record] = []
        self.injections: list[Injection] = []
        self.pids: dict[tuple[str, str], int] = {}
        self.clients = self._clients()

    # -- helpers -------------------------------------------------------------------------
    def add(
        self, at: float, host: str, pri: int, tag: str, message: str, incident: str | None = None
    ) -> None:
        if 0 <= at < DAY_S:
            self.records.append(Record(at, host, pri, tag, message, incident))

    def pid(self, host: str, program: str) -> int:
        return self.pids.setdefault((host, program), self.rng.randint(900, 4000))

    def tag(self, host: str, program: str) -> str:
        return f"{program}[{self.pid(host, program)}]"

    def kernel(
        self, at: float, host: str, severity: int, text: str, incident: str | None = None
    ) -> None:
        uptime = router_named(host).uptime + at
        self.add(at, host, KERN * 8 + severity, "kernel", f"[{uptime:.6f}] {text}", incident)

    def mac(self) -> str:
        oui = self.rng.choice(
            ("3c:22:fb", "f4:26:79", "a4:83:e7", "dc:a6:32", "b8:27:eb", "00:1e:c2")
        )
        tail = ":".join(f"{self.rng.randrange(256):02x}" for _ in range(3))
        return f"{oui}:{tail}"

    def public_ip(self) -> str:
        r = self.rng
        first = r.choice((45, 62, 80, 89, 103, 141, 176, 185, 193, 212))
        return f"{first}.{r.randrange(1, 255)}.{r.randrange(1, 255)}.{r.randrange(1, 255)}"

    def _clients(self) -> list[Client]:
        clients: list[Client] = []
        for router in FLEET:
            gateway, prefix, _ = SITES[router.site]
            for iface in router.radios:
                count = 14 if (router.hostname, iface) == ("ap-meeting", "phy1-ap0") else 4
                count += self.rng.randrange(3)
                for _ in range(count):
                    host = len([c for c in clients if c.gateway == gateway]) + 100
                    static = (router.hostname, iface) == ("ap-meeting", "phy1-ap0") or (
                        self.rng.random() < 0.3
                    )
                    clients.append(
                        Client(
                            self.mac(),
                            self.rng.choice(CLIENT_NAMES),
                            router.hostname,
                            iface,
                            gateway,
                            f"{prefix}.{host}",
                            static,
                        )
                    )
        return clients

    # -- background ----------------------------------------------------------------------
    def background(self) -> None:
        for client in self.clients:
            self.client_day(client)
        for router in FLEET:
            self.router_day(router)
        self.first_hour_kinds()

    def connect(self, at: float, c: Client, full_dhcp: bool) -> float:
        host, i, tag = c.router, c.iface, "hostapd"
        aid = self.rng.randint(1, 30)
        self.add(at, host, DAEMON * 8 + INFO, tag, f"{i}: STA {c.mac} IEEE 802.11: authenticated")
        self.add(
            at,
            host,
            DAEMON * 8 + INFO,
            tag,
            f"{i}: STA {c.mac} IEEE 802.11: associated (aid {aid})",
        )
        self.add(
            at + 0.1,
            host,
            DAEMON * 8 + INFO,
            tag,
            f"{i}: STA {c.mac} WPA: pairwise key handshake completed (RSN)",
        )
        self.add(
            at + 0.1, host, DAEMON * 8 + NOTICE, tag, f"{i}: AP-STA-CONNECTED {c.mac} auth_alg=open"
        )
        self.add(at + 0.1, host, DAEMON * 8 + NOTICE, tag, f"{i}: EAPOL-4WAY-HS-COMPLETED {c.mac}")
        self.dhcp(at + 1.5, c, full=full_dhcp)
        return at + 2

    def disconnect(self, at: float, c: Client) -> None:
        host, i, tag = c.router, c.iface, "hostapd"
        self.add(at, host, DAEMON * 8 + NOTICE, tag, f"{i}: AP-STA-DISCONNECTED {c.mac}")
        if self.rng.random() < 0.6:
            self.add(
                at, host, DAEMON * 8 + INFO, tag, f"{i}: STA {c.mac} IEEE 802.11: disassociated"
            )
        else:
            self.add(
                at - 0.5,
                host,
                DAEMON * 8 + INFO,
                tag,
                f"{i}: STA {c.mac} IEEE 802.11: disassociated due to inactivity",
            )
            self.add(
                at + 1,
                host,
                DAEMON * 8 + INFO,
                tag,
                f"{i}: STA {c.mac} IEEE 802.11: deauthenticated due to inactivity"
                " (timer DEAUTH/REMOVE)",
            )

    def dhcp(self, at: float, c: Client, full: bool) -> None:
        tag, gw = self.tag(c.gateway, "dnsmasq-dhcp"), c.gateway
        name = f" {c.name}" if c.name else ""
        if full:
            self.add(at, gw, DAEMON * 8 + INFO, tag, f"DHCPDISCOVER(br-lan) {c.mac}")
            self.add(at, gw, DAEMON * 8 + INFO, tag, f"DHCPOFFER(br-lan) {c.ip} {c.mac}")
        self.add(at + 0.2, gw, DAEMON * 8 + INFO, tag, f"DHCPREQUEST(br-lan) {c.ip} {c.mac}")
        self.add(at + 0.2, gw, DAEMON * 8 + INFO, tag, f"DHCPACK(br-lan) {c.ip} {c.mac}{name}")

    def client_day(self, c: Client) -> None:
        r = self.rng
        # connected at midnight; the first lease renewal (lease time 2h) falls in the first hour
        renew = r.uniform(60, 3300)
        while renew < DAY_S:
            self.dhcp(renew, c, full=False)
            renew += 3600 + r.uniform(-20, 20)
        t = r.uniform(600, 3000) if not c.static else r.uniform(7200, 20000)
        if (c.router, c.iface) == ("ap-meeting", "phy1-ap0"):
            t = r.uniform(600, 3000) if r.random() < 0.3 else DAY_S  # laptops stay on all day
        rekey = r.uniform(300, 3500)
        while rekey < DAY_S:
            self.add(
                rekey,
                c.router,
                DAEMON * 8 + INFO,
                "hostapd",
                f"{c.iface}: STA {c.mac} WPA: group key handshake completed (RSN)",
            )
            rekey += 3600 * r.uniform(1.5, 3)
        while t < DAY_S:
            self.disconnect(t, c)
            gap = r.uniform(60, 1200) if not c.static else r.uniform(30, 300)
            t = self.connect(t + gap, c, full_dhcp=r.random() < 0.25)
            t += r.uniform(900, 3600) if not c.static else r.uniform(7200, 28800)

    def router_day(self, router: Router) -> None:
        r, host = self.rng, router.hostname
        admin = SITES[router.site][2]
        # NTP: the hotplug script runs every 11 minutes, a rare server timeout
        t = r.uniform(0, 660)
        while t < DAY_S:
            self.add(
                t,
                host,
                DAEMON * 8 + NOTICE,
                self.tag(host, "ntpd"),
                "executing '/usr/sbin/ntpd-hotplug periodic'",
            )
            t += 660
        for _ in range(2):
            self.ntp_timeout(r.uniform(3600, DAY_S), host)
        # the admin logs in with a key now and then
        for _ in range(r.randint(1, 3)):
            self.admin_ssh(r.uniform(3600, DAY_S), host, admin, mistyped=False)
        if r.random() < 0.5:
            self.admin_ssh(r.uniform(3600, DAY_S), host, admin, mistyped=True)
        # LAN ports: a PC switched off and on
        for _ in range(r.randint(1, 3)):
            t = r.uniform(3600, DAY_S - 4000)
            self.lan_port(t, host, r.randint(1, 4), r.uniform(60, 3600))
        if router.is_gateway:
            self.gateway_day(router, admin)

    def gateway_day(self, router: Router, admin: str) -> None:
        r, host = self.rng, router.hostname
        t = r.uniform(0, 1800)  # DHCPv6-PD renewals (T1 1800 s)
        while t < DAY_S:
            self.odhcp6c_renew(t, host)
            t += 1800
        if router.wan == "dhcp":
            t = r.uniform(0, 1800)  # WAN lease 3600 s, renewed at T1
            while t < DAY_S:
                self.udhcpc_renew(t, host)
                t += 1800 + r.uniform(-5, 5)
        t = r.uniform(0, 900)  # a cron job every 15 minutes
        while t < DAY_S:
            self.add(
                t,
                host,
                CRON * 8 + NOTICE,
                self.tag(host, "crond"),
                f"USER root pid {r.randint(5000, 32000)}"
                " cmd /usr/lib/ddns/dynamic_dns_updater.sh -v 0 start",
            )
            t += 900
        t = r.uniform(0, 120)  # the internet knocks on the WAN: many sources, few ports
        while t < DAY_S:
            self.firewall_drop(t, host, self.public_ip(), r.choice(SCANNER_PORTS))
            t += r.expovariate(1 / 150)
        for _ in range(r.randint(2, 4)):
            self.dnsmasq_reload(r.uniform(3600, DAY_S), host)
        if r.random() < 0.7:
            self.luci_login(r.uniform(3600, DAY_S), host, admin, failed_first=r.random() < 0.5)

    # -- background message kinds (each must also show up in the first hour) --------------
    def ntp_timeout(self, at: float, host: str) -> None:
        server = self.rng.choice(NTP_SERVERS)
        self.add(
            at,
            host,
            DAEMON * 8 + NOTICE,
            self.tag(host, "ntpd"),
            f"timed out waiting for {server}, reach 0x7e, next query in 1024s",
        )

    def admin_ssh(self, at: float, host: str, admin: str, mistyped: bool) -> None:
        r = self.rng
        tag = f"dropbear[{r.randint(5000, 32000)}]"
        port = r.randint(40000, 65000)
        self.add(at, host, AUTHPRIV * 8 + INFO, tag, f"Child connection from {admin}:{port}")
        if mistyped:
            self.add(
                at + 4,
                host,
                AUTHPRIV * 8 + WARNING,
                tag,
                f"Bad password attempt for 'root' from {admin}:{port}",
            )
            self.add(
                at + 9,
                host,
                AUTHPRIV * 8 + NOTICE,
                tag,
                f"Password auth succeeded for 'root' from {admin}:{port}",
            )
        else:
            fp = "SHA256:3f2kq8nWcX0jPz1lHh7m0bUo9k2Yy5xWQ4gk1x7dFfA"
            self.add(
                at + 1,
                host,
                AUTHPRIV * 8 + NOTICE,
                tag,
                f"Pubkey auth succeeded for 'root' with ssh-ed25519 key {fp} from {admin}:{port}",
            )
        self.add(
            at + r.uniform(30, 900),
            host,
            AUTHPRIV * 8 + INFO,
            tag,
            f"Exit (root) from <{admin}:{port}>: Disconnect received",
        )

    def lan_port(self, at: float, host: str, port: int, down_for: float) -> None:
        dev = "mtk_soc_eth 1e100000.ethernet"
        self.kernel(at, host, INFO, f"{dev} lan{port}: Link is Down")
        self.kernel(at, host, INFO, f"br-lan: port {port}(lan{port}) entered disabled state")
        self.add(
            at, host, DAEMON * 8 + NOTICE, "netifd", f"Network device 'lan{port}' link is down"
        )
        up = at + down_for
        self.kernel(
            up, host, INFO, f"{dev} lan{port}: Link is Up - 1Gbps/Full - flow control rx/tx"
        )
        self.add(up, host, DAEMON * 8 + NOTICE, "netifd", f"Network device 'lan{port}' link is up")
        self.kernel(up, host, INFO, f"br-lan: port {port}(lan{port}) entered blocking state")
        self.kernel(
            up + 0.01, host, INFO, f"br-lan: port {port}(lan{port}) entered forwarding state"
        )

    def odhcp6c_renew(self, at: float, host: str) -> None:
        tag = self.tag(host, "odhcp6c")
        self.add(
            at,
            host,
            DAEMON * 8 + NOTICE,
            tag,
            "Starting RENEW transaction (timeout 1800s, max rc 0)",
        )
        self.add(
            at + 0.02,
            host,
            DAEMON * 8 + NOTICE,
            tag,
            f"Got a valid REPLY after {self.rng.randint(8, 40)}ms",
        )
        self.add(at + 0.02, host, DAEMON * 8 + INFO, tag, "IA_PD 0001 T1 1800 T2 2880")

    def udhcpc_renew(self, at: float, host: str) -> None:
        _, address, server = WAN[host]
        pid = self.pid(host, "udhcpc")
        self.add(
            at,
            host,
            DAEMON * 8 + NOTICE,
            "netifd",
            f"wan ({pid}): udhcpc: sending renew to server {server}",
        )
        self.add(
            at + 0.05,
            host,
            DAEMON * 8 + NOTICE,
            "netifd",
            f"wan ({pid}): udhcpc: lease of {address} obtained from {server}, lease time 3600",
        )

    def firewall_drop(
        self, at: float, host: str, src: str, port: int, incident: str | None = None
    ) -> None:
        r = self.rng
        dev, dst, _ = WAN[host]
        verdict = "drop" if incident or r.random() < 0.7 else "reject"
        mac = "" if dev.startswith("pppoe") else "MAC=d8:58:d7:00:4a:21:00:31:26:1f:80:de:08:00 "
        if port == 5060 and not incident:
            tail = f"PROTO=UDP SPT={r.randint(5000, 65000)} DPT={port} LEN={r.randint(300, 500)}"
            length = r.randint(320, 520)
        else:
            tail = (
                f"PROTO=TCP SPT={r.randint(1024, 65000)} DPT={port} WINDOW=1024 RES=0x00 SYN URGP=0"
            )
            length = 44
        text = (
            f"{verdict} wan in: IN={dev} OUT= {mac}SRC={src} DST={dst} LEN={length} TOS=0x00 "
            f"PREC=0x00 TTL={r.randint(40, 250)} ID={r.randint(1, 65535)} {tail}"
        )
        self.kernel(at, host, WARNING, text, incident)

    def dnsmasq_reload(self, at: float, host: str) -> None:
        tag = self.tag(host, "dnsmasq")
        self.add(at, host, DAEMON * 8 + INFO, tag, "read /etc/hosts - 4 names")
        self.add(at, host, DAEMON * 8 + INFO, tag, "read /tmp/hosts/dhcp.cfg01411c - 3 names")
        self.add(at, host, DAEMON * 8 + INFO, tag, "read /tmp/hosts/odhcpd - 1 names")

    def dnsmasq_restart(self, at: float, host: str) -> None:
        old, new = self.tag(host, "dnsmasq"), None
        self.add(at, host, DAEMON * 8 + INFO, old, "exiting on receipt of SIGTERM")
        self.pids[(host, "dnsmasq")] = self.pids[(host, "dnsmasq-dhcp")] = self.rng.randint(
            9000, 30000
        )
        new, dhcp = self.tag(host, "dnsmasq"), self.tag(host, "dnsmasq-dhcp")
        prefix = SITES[router_named(host).site][1]
        for text in (
            "started, version 2.90 cachesize 1000",
            "DNS service limited to local subnets",
            "compile time options: IPv6 GNU-getopt no-DBus UBus no-i18n no-IDN DHCP no-DHCPv6"
            " no-Lua TFTP no-conntrack no-ipset no-nftset no-auth no-cryptohash no-DNSSEC no-ID"
            " loop-detect inotify dumpfile",
        ):
            self.add(at + 1, host, DAEMON * 8 + INFO, new, text)
        self.add(
            at + 1,
            host,
            DAEMON * 8 + INFO,
            dhcp,
            f"DHCP, IP range {prefix}.100 -- {prefix}.249, lease time 2h",
        )
        self.add(
            at + 1,
            host,
            DAEMON * 8 + INFO,
            dhcp,
            "DHCP, sockets bound exclusively to interface br-lan",
        )
        for text in (
            "using only locally-known addresses for lan",
            "reading /tmp/resolv.conf.d/resolv.conf.auto",
            "using nameserver 1.1.1.1#53",
            "using nameserver 9.9.9.9#53",
            "using only locally-known addresses for lan",
        ):
            self.add(at + 1, host, DAEMON * 8 + INFO, new, text)
        self.dnsmasq_reload(at + 1, host)

    def luci_login(self, at: float, host: str, admin: str, failed_first: bool) -> None:
        tag = self.tag(host, "uhttpd")
        if failed_first:
            self.add(
                at,
                host,
                AUTHPRIV * 8 + WARNING,
                tag,
                f"luci: failed login on / for root from {admin}",
            )
            at += 6
        self.add(
            at, host, AUTHPRIV * 8 + NOTICE, tag, f"luci: accepted login on / for root from {admin}"
        )

    def first_hour_kinds(self) -> None:
        """The rarer background kinds, once each in the first hour, so they are learned."""
        r = self.rng
        at = lambda: r.uniform(120, 3300)  # noqa: E731
        self.ntp_timeout(at(), "ap-floor2")
        self.admin_ssh(at(), "gw-office", SITES["office"][2], mistyped=False)
        self.admin_ssh(at(), "gw-shop", SITES["shop"][2], mistyped=True)
        self.lan_port(at(), "gw-branch", 2, 300)
        self.dnsmasq_restart(at(), "gw-shop")
        self.luci_login(at(), "gw-home", SITES["home"][2], failed_first=True)
        self.firewall_drop(at(), "gw-branch", self.public_ip(), 5060)
        self.firewall_drop(at(), "gw-office", self.public_ip(), 5060)
        for client in self.clients[:: len(self.clients) // 6]:
            t = at()
            self.disconnect(t, client)
            self.connect(t + 30, client, full_dhcp=True)
        for host in ("gw-office", "gw-shop"):  # both verdicts, with and without a MAC
            for verdict_try in range(6):
                self.firewall_drop(at() + verdict_try, host, self.public_ip(), 23)
