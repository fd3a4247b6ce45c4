"""The sandbox's OpenStack cloud: real Keystone and Swift (:mod:`.cloud`, run from the
isolated environment of :mod:`.env`) and emulated Nova, Designate and Cinder, one service
per module (:mod:`.nova`, :mod:`.designate`, :mod:`.cinder`) on a shared base
(:mod:`.base`: Keystone token checks, request handling, errors)."""
