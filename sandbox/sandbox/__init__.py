"""Lifeboat's local test world: a real kube-apiserver + etcd, moto for AWS, real Keystone and
Swift with emulated Nova, Designate and Cinder for OpenStack, zonal app endpoints and a fault
layer in front of every cloud API and zone.

It serves the demo, the tests and the benchmark, and is never part of the product: it
imports :mod:`controller` (it runs the operator), the product never imports it. Installed
into the development environment only (distribution ``lifeboat-sandbox``, command
``lifeboat-sandbox``).
"""
