#!/usr/bin/perl
# oracle.pl FILE... prints one JSON object a line per file: what sisimai
# (Debian's libsisimai-perl, 4.25) makes of it. The Go test TestOracle
# (LEADPUSH_SISIMAI=1) compares these answers with the package's own.
# Not run in CI: sisimai is an optional local reference, not a dependency.
use strict;
use warnings;
use Sisimai;
use JSON::PP;

my $json = JSON::PP->new->canonical(1);
for my $file (@ARGV) {
    my $v = eval { Sisimai->make($file, 'vacation' => 1, 'delivered' => 1) } || [];
    my @rcpts;
    for my $d (@$v) {
        push @rcpts, {
            'address'    => $d->recipient->address // '',
            'status'     => $d->deliverystatus // '',
            'reason'     => $d->reason // '',
            'softbounce' => 0 + ($d->softbounce // -1),
            'action'     => $d->action // '',
            'replycode'  => $d->replycode // '',
            'feedback'   => $d->feedbacktype // '',
        };
    }
    print $json->encode({ 'file' => $file, 'recipients' => \@rcpts }), "\n";
}
