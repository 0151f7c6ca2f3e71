// Clients whose daemon runs in a VM or a container (Docker Desktop, kind,
// minikube) cannot reach the host's 127.0.0.1: setup does not edit their
// files, it prints what to paste and the address the VM reaches the host by.
// That address is not loopback, so dproxy must listen on it, which needs
// client authentication (`dproxy start --host 0.0.0.0 --auth`).

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
      ? `Settings > Docker Engine, add:\n  "registry-mirrors": ["http://${address}"]`
      : target === 'kind'
        ? `kind cluster config:\ncontainerdConfigPatches:\n- |-\n  [plugins."io.containerd.grpc.v1.cri".registry]\n    config_path = "/etc/containerd/certs.d"\n` +
          `and in each node, /etc/containerd/certs.d/docker.io/hosts.toml:\n  [host."http://${address}"]\n    capabilities = ["pull", "resolve"]`
        : `minikube start --registry-mirror=http://${address} --insecure-registry=${address}`
  const text =
    `${target}: its daemon runs in a VM and reaches this machine as ${host}, so dproxy must listen beyond loopback: ` +
    `dproxy start --host 0.0.0.0 --port ${port} --auth (then log the VM in with the values of dproxy env).\n${snippet}\n`
  return { target, address, snippet, text }
}
