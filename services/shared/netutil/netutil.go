// Package netutil holds small address helpers shared by every service.
package netutil

import (
	"fmt"
	"net"
	"strconv"
)

// FreeLoopbackAddr returns a 127.0.0.1 address whose port was free a moment ago. It is for
// tests and for embedded components that must be told a port up front (etcd peers); a
// listener that can take port 0 should do that instead.
func FreeLoopbackAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// ValidateHostPort checks that addr is host:port with a port in 0..65535. field names the
// configuration field in the error so the user knows what to fix.
func ValidateHostPort(field, addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%s: %q is not host:port: %w", field, addr, err)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("%s: %q has an invalid port", field, addr)
	}
	return nil
}

// AdvertiseAddr returns the address other processes should dial to reach a listener bound
// at listenAddr. A wildcard host (0.0.0.0, ::, empty) is replaced by the first non-loopback
// interface address, which is what a container's peers can reach.
func AdvertiseAddr(listenAddr string) (string, error) {
	host, port, err := net.SplitHostPort(listenAddr)
	if err != nil {
		return "", err
	}
	ip := net.ParseIP(host)
	if host != "" && (ip == nil || !ip.IsUnspecified()) {
		return listenAddr, nil
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return "", fmt.Errorf("list interface addresses: %w", err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && !n.IP.IsLoopback() && n.IP.To4() != nil {
			return net.JoinHostPort(n.IP.String(), port), nil
		}
	}
	return net.JoinHostPort("127.0.0.1", port), nil
}

// FreeLoopbackPort is FreeLoopbackAddr's port, for programs that take the port alone.
func FreeLoopbackPort() (int, error) {
	addr, err := FreeLoopbackAddr()
	if err != nil {
		return 0, err
	}
	_, port, _ := net.SplitHostPort(addr)
	return strconv.Atoi(port)
}
