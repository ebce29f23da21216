/**
 * The SageMaker Triton image (`sagemaker-tritonserver:<ver>-py3`) by region. AWS publishes it in
 * the Deep Learning Containers registries: account 763104351884 in most regions, other accounts
 * in opt-in and China regions (table "Deep Learning Containers Docker Images are available in the
 * following regions", aws/deep-learning-containers available_images.md). Triton releases before
 * 23.x lived in separate per-region accounts; this map covers the DLC-hosted releases (23.x and
 * later). In an environment-agnostic stack the account is chosen at deploy time through a
 * CloudFormation mapping keyed on `AWS::Region`.
 */
import { Aws, CfnMapping, Stack, Token } from 'aws-cdk-lib';
import type { Construct } from 'constructs';

const DEFAULT_DLC_ACCOUNT = '763104351884';

/** Regions whose DLC registry is not the default account. */
export const DLC_ACCOUNT_OVERRIDES: Readonly<Record<string, string>> = {
  'af-south-1': '626614931356',
  'ap-east-1': '871362719292',
  'ap-northeast-3': '364406365360',
  'ap-southeast-3': '907027046896',
  'eu-south-1': '692866216735',
  'me-south-1': '217643126080',
  'me-central-1': '914824155844',
  'cn-north-1': '727897471807',
  'cn-northwest-1': '727897471807',
};

/** Regions in the DLC table with the default account. */
export const DLC_DEFAULT_REGIONS: readonly string[] = [
  'us-east-1',
  'us-east-2',
  'us-west-1',
  'us-west-2',
  'ap-south-1',
  'ap-northeast-1',
  'ap-northeast-2',
  'ap-southeast-1',
  'ap-southeast-2',
  'ca-central-1',
  'eu-central-1',
  'eu-west-1',
  'eu-west-2',
  'eu-west-3',
  'eu-north-1',
  'sa-east-1',
];

/** The DLC registry account of a concrete region. */
export function dlcAccount(region: string): string {
  return DLC_ACCOUNT_OVERRIDES[region] ?? DEFAULT_DLC_ACCOUNT;
}

/** `<account>.dkr.ecr.<region>.<urlSuffix>/sagemaker-tritonserver:<version>-py3` for the stack's region. */
export function tritonImageUri(scope: Construct, version: string): { uri: string; account: string } {
  const stack = Stack.of(scope);
  let account: string;
  if (Token.isUnresolved(stack.region)) {
    const id = 'TritonImageAccounts';
    const mapping =
      (stack.node.tryFindChild(id) as CfnMapping | undefined) ??
      new CfnMapping(stack, id, {
        mapping: Object.fromEntries(
          [...DLC_DEFAULT_REGIONS, ...Object.keys(DLC_ACCOUNT_OVERRIDES)].map((r) => [
            r,
            { account: dlcAccount(r) },
          ]),
        ),
      });
    account = mapping.findInMap(Aws.REGION, 'account');
  } else {
    account = dlcAccount(stack.region);
  }
  const suffix = Token.isUnresolved(stack.region)
    ? stack.urlSuffix
    : stack.region.startsWith('cn-')
      ? 'amazonaws.com.cn'
      : 'amazonaws.com';
  return {
    account,
    uri: `${account}.dkr.ecr.${stack.region}.${suffix}/sagemaker-tritonserver:${version}-py3`,
  };
}
