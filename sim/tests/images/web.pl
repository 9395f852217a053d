#!/usr/bin/perl
# The HTTP server of the kube-sim-test-web image (sim/tests/runner_deployments.rs): after
# READY_DELAY seconds it listens on $POD_IP:$PORT (default 127.0.0.1:8080) and answers every
# request with 200 and "$VERSION\n"; on SIGTERM it prints "terminating" and exits 0. Pods of
# the Docker runtime share the host network, so each binds its own pod IP.
use strict;
use warnings;
use IO::Socket::INET;

$| = 1;
# PID 1 in the container: without a handler SIGTERM would be ignored.
$SIG{TERM} = sub { print "terminating\n"; exit 0; };
my $ip = $ENV{POD_IP} || '127.0.0.1';
my $port = $ENV{PORT} || 8080;
my $version = $ENV{VERSION} || 'v0';
print "starting $version\n";
sleep($ENV{READY_DELAY}) if $ENV{READY_DELAY};
my $srv = IO::Socket::INET->new(
    LocalAddr => $ip,
    LocalPort => $port,
    Listen    => 16,
    ReuseAddr => 1,
) or die "cannot listen on $ip:$port: $!\n";
print "listening on $ip:$port\n";
while (1) {
    my $c = $srv->accept or next;
    while (my $line = <$c>) {
        last if $line =~ /^\r?\n$/;
    }
    my $body = "$version\n";
    print $c "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: "
      . length($body) . "\r\n\r\n$body";
    close $c;
}
