"""Incidents of the scripted day: each injected at a known time with the findings it must give."""

from __future__ import annotations

from tests.scenario.background import Background
from tests.scenario.fleet import (
    AUTHPRIV,
    DAEMON,
    ERR,
    INFO,
    NOTICE,
    USER,
    WAN,
    WARNING,
    Expected,
    Injection,
)


class Scenario(Background):
    """A healthy day plus the incidents of every domain (`incidents()`)."""

    # -- incidents -----------------------------------------------------------------------
    def inject(
        self, name: str, domain: str, host: str, at: float, *expected: tuple[str, str]
    ) -> str:
        self.injections.append(
            Injection(
                name, domain, host, at, tuple(Expected(rule, host, key) for rule, key in expected)
            )
        )
        return name

    def incidents(self) -> None:
        self.wifi_incidents()
        self.security_incidents()
        self.health_incidents()
        self.wan_incidents()
        # a genuinely new kind of message, far from the learning hour
        name = self.inject("dns rebind answer dropped", "other", "gw-branch", 18 * 3600 + 40 * 60)
        self.add(
            18 * 3600 + 40 * 60,
            "gw-branch",
            DAEMON * 8 + WARNING,
            self.tag("gw-branch", "dnsmasq"),
            "possible DNS-rebind attack detected: printer.rebind-test.example",
            name,
        )

    def wifi_incidents(self) -> None:
        r = self.rng
        # a smart plug with a wrong PSK retries every 3 s
        host, iface, mac, t0 = "ap-lobby", "phy0-ap0", "68:57:2d:11:9a:03", 2 * 3600 + 14 * 60
        name = self.inject("IoT device retrying with a wrong PSK", "wifi", host, t0,
                           ("wifi-auth-failure-rate", f"{host}|{mac}"),
                           ("wifi-psk-mismatch", f"{host}|{iface}|{mac}"))  # fmt: skip
        for n in range(20):
            t = t0 + 3 * n
            self.add(
                t,
                host,
                DAEMON * 8 + INFO,
                "hostapd",
                f"{iface}: STA {mac} IEEE 802.11: authenticated",
                name,
            )
            self.add(
                t,
                host,
                DAEMON * 8 + INFO,
                "hostapd",
                f"{iface}: STA {mac} IEEE 802.11: associated (aid 7)",
                name,
            )
            self.add(
                t + 1,
                host,
                DAEMON * 8 + INFO,
                "hostapd",
                f"{iface}: STA {mac} WPA: invalid MIC in msg 2/4 of 4-Way Handshake",
                name,
            )
            self.add(
                t + 1,
                host,
                DAEMON * 8 + NOTICE,
                "hostapd",
                f"{iface}: AP-STA-POSSIBLE-PSK-MISMATCH {mac}",
                name,
            )
        # a laptop still has last month's password
        c = next(c for c in self.clients if c.router == "ap-floor2")
        t0 = 8 * 3600 + 40 * 60
        name = self.inject("laptop with an old Wi-Fi password", "wifi", c.router, t0,
                           ("wifi-psk-mismatch", f"{c.router}|{c.iface}|{c.mac}"))  # fmt: skip
        for n in range(3):
            t = t0 + 20 * n
            self.add(
                t,
                c.router,
                DAEMON * 8 + INFO,
                "hostapd",
                f"{c.iface}: STA {c.mac} IEEE 802.11: authenticated",
                name,
            )
            self.add(
                t,
                c.router,
                DAEMON * 8 + INFO,
                "hostapd",
                f"{c.iface}: STA {c.mac} IEEE 802.11: associated (aid 3)",
                name,
            )
            self.add(
                t + 1,
                c.router,
                DAEMON * 8 + NOTICE,
                "hostapd",
                f"{c.iface}: AP-STA-POSSIBLE-PSK-MISMATCH {c.mac}",
                name,
            )
        # deauthentication attack: the meeting room's laptops are all thrown off
        host, iface, t0 = "ap-meeting", "phy1-ap0", 10 * 3600 + 5 * 60
        name = self.inject("deauth flood in the meeting room", "wifi", host, t0,
                           ("wifi-deauth-flood", f"{host}|{iface}|sta_disassociated"))  # fmt: skip
        victims = [c for c in self.clients if (c.router, c.iface) == (host, iface)][:11]
        for n, c in enumerate(victims):
            t = t0 + 1.5 * n
            self.add(
                t,
                host,
                DAEMON * 8 + NOTICE,
                "hostapd",
                f"{iface}: AP-STA-DISCONNECTED {c.mac}",
                name,
            )
            self.add(
                t,
                host,
                DAEMON * 8 + INFO,
                "hostapd",
                f"{iface}: STA {c.mac} IEEE 802.11: disassociated",
                name,
            )
        for c in victims:
            self.connect(t0 + r.uniform(330, 600), c, full_dhcp=False)
        # weather radar on the 5 GHz DFS channel
        host, iface, t0 = "ap-floor1", "phy1-ap0", 13 * 3600 + 30 * 60
        name = self.inject("DFS radar detected", "wifi", host, t0,
                           ("wifi-dfs-radar-detected", f"{host}|{iface}"))  # fmt: skip
        self.add(
            t0,
            host,
            DAEMON * 8 + NOTICE,
            "hostapd",
            f"{iface}: DFS-RADAR-DETECTED freq=5500 ht_enabled=0 chan_offset=0 chan_width=3"
            " cf1=5530 cf2=0",
            name,
        )
        self.add(
            t0,
            host,
            DAEMON * 8 + NOTICE,
            "hostapd",
            f"{iface}: DFS-NEW-CHANNEL freq=5180 chan=36 sec_chan=1",
            name,
        )
        self.add(
            t0 + 1,
            host,
            DAEMON * 8 + NOTICE,
            "hostapd",
            f"{iface}: AP-CSA-FINISHED freq=5180 dfs=0",
            name,
        )
        # interference: IoT clients keep timing out in the 4-way handshake
        host, iface, t0 = "ap-lobby", "phy0-ap0", 16 * 3600 + 20 * 60
        name = self.inject("handshake timeouts on the lobby 2.4 GHz radio", "wifi", host, t0,
                           ("wifi-handshake-failures", f"{host}|{iface}"))  # fmt: skip
        macs = [c.mac for c in self.clients if (c.router, c.iface) == (host, iface)]
        for n in range(12):
            mac = macs[n % len(macs)]
            self.add(
                t0 + 20 * n,
                host,
                DAEMON * 8 + INFO,
                "hostapd",
                f"{iface}: STA {mac} WPA: EAPOL-Key timeout",
                name,
            )

    def security_incidents(self) -> None:
        # SSH brute force from the internet against the office gateway
        host, ip, t0 = "gw-office", "45.155.205.12", 3 * 3600 + 10 * 60
        key = f"{host}|{ip}"
        name = self.inject("SSH brute force with user enumeration", "security", host, t0,
                           ("ssh-brute-force-fast", key), ("ssh-brute-force-slow", key),
                           ("ssh-user-enumeration", key), ("ssh-username-spray", key))  # fmt: skip
        users = ("admin", "ubnt", "oracle", "test", "pi", "user", "support", "guest")
        for n in range(40):
            t, port = t0 + 6 * n, 30000 + 7 * n
            tag = f"dropbear[{20000 + n}]"
            self.add(t, host, AUTHPRIV * 8 + INFO, tag, f"Child connection from {ip}:{port}", name)
            if n % 3 == 0:
                self.add(
                    t + 2,
                    host,
                    AUTHPRIV * 8 + WARNING,
                    tag,
                    f"Bad password attempt for 'root' from {ip}:{port}",
                    name,
                )
                self.add(
                    t + 3,
                    host,
                    AUTHPRIV * 8 + INFO,
                    tag,
                    f"Exit before auth from <{ip}:{port}>: (user 'root', 1 fails): Exited normally",
                    name,
                )
            else:
                user = users[n % len(users)]
                self.add(
                    t + 2,
                    host,
                    AUTHPRIV * 8 + WARNING,
                    tag,
                    f"Login attempt for nonexistent user '{user}' from {ip}:{port}",
                    name,
                )
                self.add(
                    t + 3,
                    host,
                    AUTHPRIV * 8 + INFO,
                    tag,
                    f"Exit before auth from <{ip}:{port}>: Exited normally",
                    name,
                )
        # a guessed password: three failures, then a login
        host, ip, t0 = "gw-shop", "198.51.100.23", 11 * 3600 + 45 * 60
        name = self.inject("SSH login after failed passwords", "security", host, t0,
                           ("ssh-login-after-failures", f"{host}|{ip}"))  # fmt: skip
        tag = "dropbear[23117]"
        self.add(t0, host, AUTHPRIV * 8 + INFO, tag, f"Child connection from {ip}:52114", name)
        for n in range(3):
            self.add(
                t0 + 5 + 4 * n,
                host,
                AUTHPRIV * 8 + WARNING,
                tag,
                f"Bad password attempt for 'root' from {ip}:52114",
                name,
            )
        self.add(
            t0 + 20,
            host,
            AUTHPRIV * 8 + NOTICE,
            tag,
            f"Password auth succeeded for 'root' from {ip}:52114",
            name,
        )
        # a port scan of the branch gateway
        host, ip, t0 = "gw-branch", "185.220.101.7", 15 * 3600 + 2 * 60
        name = self.inject(
            "port scan", "security", host, t0, ("firewall-port-scan", f"{host}|{ip}")
        )
        ports = sorted(self.rng.sample(range(1, 10000), 40))
        for n, port in enumerate(ports):
            self.firewall_drop(t0 + 0.5 * n, host, ip, port, name)
        # someone on the home LAN guesses the LuCI password
        host, ip, t0 = "gw-home", "192.168.2.66", 19 * 3600 + 30 * 60
        name = self.inject(
            "LuCI password guessing", "security", host, t0, ("luci-login-failures", f"{host}|{ip}")
        )
        for n in range(8):
            self.add(
                t0 + 12 * n,
                host,
                AUTHPRIV * 8 + WARNING,
                self.tag(host, "uhttpd"),
                f"luci: failed login on / for root from {ip}",
                name,
            )
        # a new device joins the shop's Wi-Fi
        host, mac, t0 = "gw-shop", "5c:e9:1e:84:02:7b", 14 * 3600 + 10 * 60
        ack = f"DHCPACK(br-lan) 192.168.1.190 {mac} Galaxy-Tab-S6"
        name = self.inject("a device never seen before", "security", host, t0,
                           ("dhcp-new-client-mac", host))  # fmt: skip  # one per router per hour
        tag = self.tag(host, "dnsmasq-dhcp")
        self.add(t0, host, DAEMON * 8 + INFO, tag, f"DHCPDISCOVER(br-lan) {mac}", name)
        self.add(t0, host, DAEMON * 8 + INFO, tag, f"DHCPOFFER(br-lan) 192.168.1.190 {mac}", name)
        self.add(
            t0 + 0.2, host, DAEMON * 8 + INFO, tag, f"DHCPREQUEST(br-lan) 192.168.1.190 {mac}", name
        )
        self.add(t0 + 0.2, host, DAEMON * 8 + INFO, tag, ack, name)

    def health_incidents(self) -> None:
        # the garden AP runs out of memory and the kernel kills hostapd
        host, t0 = "ap-garden", 4 * 3600 + 22 * 60
        name = self.inject("OOM killer kills hostapd", "health", host, t0,
                           ("oom-killer", host), ("wifi-hostapd-crash", host))  # fmt: skip
        self.kernel(
            t0,
            host,
            WARNING,
            "hostapd invoked oom-killer: gfp_mask=0x140cca(GFP_HIGHUSER_MOVABLE|__GFP_COMP),"
            " order=0, oom_score_adj=0",
            name,
        )
        self.kernel(
            t0,
            host,
            ERR,
            "Out of memory: Killed process 1685 (hostapd) total-vm:12345kB, anon-rss:4567kB,"
            " file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:40kB oom_score_adj:0",
            name,
        )
        self.kernel(
            t0 + 0.05,
            host,
            INFO,
            "oom_reaper: reaped process 1685 (hostapd), now anon-rss:0kB, file-rss:0kB,"
            " shmem-rss:0kB",
            name,
        )
        # the shop's connection tracking table overflows
        host, t0 = "gw-shop", 6 * 3600 + 48 * 60
        name = self.inject(
            "conntrack table full", "health", host, t0, ("conntrack-table-full", host)
        )
        for n in range(30):
            self.kernel(
                t0 + 4 * n,
                host,
                WARNING,
                "nf_conntrack: nf_conntrack: table full, dropping packet",
                name,
            )
        self.kernel(t0 + 121, host, WARNING, "net_ratelimit: 212 callbacks suppressed", name)
        # an add-on service keeps crashing until procd gives up
        host, t0 = "gw-office", 9 * 3600 + 15 * 60
        name = self.inject(
            "procd crash loop", "health", host, t0, ("procd-crash-loop", f"{host}|adblock")
        )
        self.add(
            t0,
            host,
            DAEMON * 8 + INFO,
            "procd",
            "Instance adblock::adblock s in a crash loop 6 crashes, 0 seconds since last crash",
            name,
        )
        # the warehouse AP's 5 GHz firmware crashes
        host, t0 = "ap-warehouse", 17 * 3600 + 5 * 60
        name = self.inject(
            "Wi-Fi firmware crash",
            "health",
            host,
            t0,
            ("wifi-firmware-crash", f"{host}|ath10k_pci"),
        )
        self.kernel(t0, host, ERR, "ath10k_pci 0000:01:00.0: firmware crashed! (guid n/a)", name)
        self.kernel(t0, host, ERR, "ath10k_pci 0000:01:00.0: firmware register dump:", name)
        self.kernel(t0 + 0.5, host, INFO, "ieee80211 phy1: Hardware restart was requested", name)

    def wan_incidents(self) -> None:
        # a loose cable: the branch WAN link flaps four times in eight minutes
        host, t0 = "gw-branch", 5 * 3600 + 30 * 60
        name = self.inject("WAN link flapping", "wan", host, t0,
                           ("wan-link-flapping", f"{host}|wan"),
                           ("wan-interface-down", f"{host}|wan"))  # fmt: skip
        _, address, server = WAN[host]
        for n in range(4):
            t = t0 + 120 * n
            self.kernel(t, host, INFO, "mtk_soc_eth 1e100000.ethernet wan: Link is Down", name)
            self.add(
                t, host, DAEMON * 8 + NOTICE, "netifd", "Network device 'eth1' link is down", name
            )
            self.add(
                t,
                host,
                DAEMON * 8 + NOTICE,
                "netifd",
                "Interface 'wan' has link connectivity loss",
                name,
            )
            self.add(
                t + 0.1, host, DAEMON * 8 + NOTICE, "netifd", "Interface 'wan' is now down", name
            )
            self.kernel(
                t + 40,
                host,
                INFO,
                "mtk_soc_eth 1e100000.ethernet wan: Link is Up - 1Gbps/Full - flow control rx/tx",
                name,
            )
            self.add(
                t + 40,
                host,
                DAEMON * 8 + NOTICE,
                "netifd",
                "Network device 'eth1' link is up",
                name,
            )
            self.add(
                t + 40,
                host,
                DAEMON * 8 + NOTICE,
                "netifd",
                "Interface 'wan' has link connectivity",
                name,
            )
            self.add(
                t + 40,
                host,
                DAEMON * 8 + NOTICE,
                "netifd",
                "Interface 'wan' is setting up now",
                name,
            )
            self.add(
                t + 43,
                host,
                DAEMON * 8 + NOTICE,
                "netifd",
                f"wan ({9000 + n}): udhcpc: lease of {address} obtained from {server},"
                " lease time 3600",
                name,
            )
            self.add(t + 43, host, DAEMON * 8 + NOTICE, "netifd", "Interface 'wan' is now up", name)
        # the ISP drops the home PPPoE session and then refuses the credentials twice
        host, t0 = "gw-home", 7 * 3600 + 55 * 60
        name = self.inject("PPPoE authentication failure", "wan", host, t0,
                           ("pppoe-auth-failure", host),
                           ("wan-interface-down", f"{host}|wan"))  # fmt: skip
        pid = 4100
        for text in (
            "LCP terminated by peer (Session Timeout)",
            "Connect time 1635.2 minutes.",
            "Sent 81234567 bytes, received 912345678 bytes.",
            "Connection terminated.",
            "Modem hangup",
        ):
            self.add(t0, host, DAEMON * 8 + NOTICE, f"pppd[{pid}]", text, name)
        self.add(t0 + 1, host, DAEMON * 8 + NOTICE, "netifd", "Interface 'wan' is now down", name)
        for n in range(3):
            t, pid = t0 + 10 + 45 * n, pid + 37
            self.add(
                t, host, DAEMON * 8 + NOTICE, "netifd", "Interface 'wan' is setting up now", name
            )
            for text in (
                "Plugin pppoe.so loaded.",
                "PPPoE plugin from pppd 2.5.0",
                "pppd 2.5.0 started by root, uid 0",
                "PPP session is 4711",
                "Connected to 40:ee:dd:da:68:f0 via interface eth1",
                "Using interface pppoe-wan",
                "Connect: pppoe-wan <--> eth1",
            ):
                self.add(t + 1, host, DAEMON * 8 + INFO, f"pppd[{pid}]", text, name)
            if n < 2:
                self.add(
                    t + 2,
                    host,
                    DAEMON * 8 + ERR,
                    f"pppd[{pid}]",
                    "CHAP authentication failed",
                    name,
                )
                self.add(
                    t + 2, host, DAEMON * 8 + NOTICE, f"pppd[{pid}]", "Connection terminated.", name
                )
                self.add(t + 2, host, DAEMON * 8 + INFO, f"pppd[{pid}]", "Exit.", name)
            else:
                self.add(
                    t + 2,
                    host,
                    DAEMON * 8 + INFO,
                    f"pppd[{pid}]",
                    "CHAP authentication succeeded: Access granted",
                    name,
                )
                self.add(
                    t + 2,
                    host,
                    DAEMON * 8 + NOTICE,
                    f"pppd[{pid}]",
                    "local  IP address 87.122.40.18",
                    name,
                )
                self.add(
                    t + 2,
                    host,
                    DAEMON * 8 + NOTICE,
                    f"pppd[{pid}]",
                    "remote IP address 87.122.0.1",
                    name,
                )
                self.add(
                    t + 3, host, DAEMON * 8 + NOTICE, "netifd", "Interface 'wan' is now up", name
                )
        # the shop's upstream resolver stops answering recursive queries
        host, t0 = "gw-shop", 12 * 3600 + 30 * 60
        name = self.inject(
            "DNS upstream failures", "wan", host, t0, ("dns-upstream-failures", host)
        )
        for n in range(6):
            self.add(
                t0 + 25 * n,
                host,
                DAEMON * 8 + WARNING,
                self.tag(host, "dnsmasq"),
                "nameserver 100.64.0.53 refused to do a recursive query",
                name,
            )
        for n in range(2):
            self.add(
                t0 + 160 + 10 * n,
                host,
                DAEMON * 8 + WARNING,
                self.tag(host, "dnsmasq"),
                "Maximum number of concurrent DNS queries reached (max: 150)",
                name,
            )
        # the office's fibre goes down; mwan3 fails over to LTE
        host, t0 = "gw-office", 20 * 3600 + 10 * 60
        name = self.inject("mwan3 failover", "wan", host, t0, ("mwan3-failover", f"{host}|wan"))
        tag = self.tag(host, "mwan3track")
        for n in range(5):
            self.add(
                t0 + 5 * n,
                host,
                USER * 8 + INFO,
                tag,
                f'Check (ping) failed for target "1.1.1.1" on interface wan (pppoe-wan).'
                f" Current score: {9 - n}",
                name,
            )
        self.add(
            t0 + 25, host, USER * 8 + INFO, tag, "Lost 5 ping(s) on interface wan (pppoe-wan)", name
        )
        self.add(
            t0 + 25, host, USER * 8 + NOTICE, tag, "Interface wan (pppoe-wan) is offline", name
        )
        self.add(
            t0 + 26,
            host,
            USER * 8 + NOTICE,
            "mwan3-hotplug[31337]",
            "Execute disconnected event on interface wan (pppoe-wan)",
            name,
        )
        self.add(
            t0 + 900, host, USER * 8 + NOTICE, tag, "Interface wan (pppoe-wan) is online", name
        )
