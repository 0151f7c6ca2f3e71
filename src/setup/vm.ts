// Clients whose daemon runs in a VM or a container (Docker Desktop, kind,
// minikube) cannot reach the host's 127.0.0.1: setup does not edit their
// files, it prints what to do and the address the VM reaches the host by.
// That address is not loopback, so dproxy must listen on it, which needs TLS
// and client authentication (`dproxy start --host 0.0.0.0 --auth --tls auto
// --tls-name <that name>`), and the VM must trust dproxy's CA: the command
// dproxy status prints (`dproxy setup --server ... --fingerprint ...`) does
// it where dproxy runs in the VM, otherwise the CA file is copied by hand.

export const VM_TARGETS = ['docker-desktop', 'kind', 'minikube'] as const
export type VmTarget = (typeof VM_TARGETS)[number]

export interface VmInstructions {
  target: VmTarget
  /** The address the VM reaches dproxy by. */
  address: string
  snippet: string
  text: string
}

export function vmInstructions(target: VmTarget, local: string): VmInstructions {
  const port = local.slice(local.lastIndexOf(':') + 1)
  const host = target === 'minikube' ? 'host.minikube.internal' : 'host.docker.internal'
  const address = `${host}:${port}`
  const snippet =
    target === 'docker-desktop'
      ? `copy <stateDir>/tls/ca.pem to ~/.docker/certs.d/${address}/ca.crt, then:\n  docker login ${address}\n  docker pull ${address}/library/alpine:latest`
      : target === 'kind'
        ? `kind cluster config:\ncontainerdConfigPatches:\n- |-\n  [plugins."io.containerd.grpc.v1.cri".registry]\n    config_path = "/etc/containerd/certs.d"\n` +
          `and in each node, <stateDir>/tls/ca.pem as /etc/containerd/certs.d/${address}/ca.crt and /etc/containerd/certs.d/docker.io/hosts.toml:\n` +
          `  [host."https://${address}"]\n    capabilities = ["pull", "resolve"]\n    ca = "../${address}/ca.crt"`
        : `copy <stateDir>/tls/ca.pem to ~/.minikube/certs/dproxy-ca.pem, then:\n  minikube start --registry-mirror=https://${address}`
  const text =
    `${target}: its daemon runs in a VM and reaches this machine as ${host}, so dproxy must listen beyond loopback, with TLS and client auth: ` +
    `dproxy start --host 0.0.0.0 --port ${port} --auth --tls auto --tls-name ${host} ` +
    `(then log the VM in with a token of dproxy token create, or the values of dproxy env).\n${snippet}\n`
  return { target, address, snippet, text }
}
